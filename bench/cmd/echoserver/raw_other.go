//go:build !linux

package main

import (
	"context"
	"errors"
	"net/netip"
)

// startRaw: the raw server is recvmmsg/sendmmsg on a blocking socket, which
// only Linux has.
func startRaw(context.Context, string, netip.AddrPort) (func() error, error) {
	return nil, errors.New("the raw server (blocking recvmmsg/sendmmsg) is Linux only")
}
