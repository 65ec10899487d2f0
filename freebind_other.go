//go:build !linux

package p2pd

import (
	"fmt"
	"syscall"
)

func setFreeBind(syscall.RawConn, bool) error {
	return fmt.Errorf("p2pd: FreeBind: %w", ErrUnsupported)
}
