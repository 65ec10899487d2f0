//go:build !unix && !windows

package p2pd

import (
	"syscall"
)

const haveRawRead = false

// BUG(p2pd): On systems other than Unix and Windows, ReuseAddr and
// Broadcast are not supported and idle TCP connections keep their buffer.

func readRaw(fd uintptr, b []byte) (int, bool, error) { return 0, false, ErrUnsupported } // never called: haveRawRead is false

func setSockopts(rc syscall.RawConn, reuse, bcast bool) error {
	return errorf("p2pd: socket options: %w", ErrUnsupported)
}

func isAddrInUse(err error) bool { return false }
