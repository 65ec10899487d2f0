//go:build !linux

package rtnl

import (
	"errors"
	"fmt"
	"runtime"
)

func dumpAddrs(uint8) ([]Addr, error) {
	return nil, fmt.Errorf("rtnl: dump addresses on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func dumpRoutes(uint8) ([]Route, error) {
	return nil, fmt.Errorf("rtnl: dump routes on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
