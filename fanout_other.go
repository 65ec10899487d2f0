//go:build !linux

package p2pd

import (
	"context"
	"net"
)

// haveFanout is false: SO_REUSEPORT does not spread datagrams over a
// group's sockets everywhere (on Darwin the last socket bound takes them
// all), so PipeConfig.Sockets above 1 is Linux only.
const haveFanout = false

// BUG(p2pd): PipeConfig.Sockets above 1 is supported on Linux only.

func bindFanout(ctx context.Context, lc net.ListenConfig, proto Proto, network, addr string, n int) (*fanout, error) {
	return nil, errorf("p2pd: %d sockets per listener (PipeConfig.Sockets): %w", n, ErrUnsupported)
}
