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

// Monitor exists on Linux only.
type Monitor struct{}

// OpenMonitor is unsupported here: poll instead.
func OpenMonitor() (*Monitor, error) {
	return nil, fmt.Errorf("rtnl: monitor on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func (m *Monitor) Next() (int, error) { return 0, errors.ErrUnsupported }
func (m *Monitor) Close() error       { return nil }
