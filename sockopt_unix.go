//go:build unix

package p2pd

import (
	"errors"
	"os"
	"syscall"
)

// haveRawRead says that TCP connections can be read through their
// RawConn, so that an idle connection holds no buffer (see connReader).
const haveRawRead = true

// readRaw reads once from a non-blocking socket; again reports EAGAIN.
func readRaw(fd uintptr, b []byte) (n int, again bool, err error) {
	for {
		n, err := syscall.Read(int(fd), b)
		switch err {
		case nil:
			return n, false, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, true, nil
		}
		return 0, false, os.NewSyscallError("read", err)
	}
}

// setSockopts sets SO_REUSEADDR and SO_BROADCAST before bind.
func setSockopts(rc syscall.RawConn, reuse, bcast bool) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if reuse {
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); serr != nil {
				serr = os.NewSyscallError("setsockopt SO_REUSEADDR", serr)
				return
			}
		}
		if bcast {
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1); serr != nil {
				serr = os.NewSyscallError("setsockopt SO_BROADCAST", serr)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
