//go:build !linux

package p2pd

import (
	"syscall"
)

func setFreeBind(syscall.RawConn, bool) error {
	return errorf("p2pd: FreeBind: %w", ErrUnsupported)
}
