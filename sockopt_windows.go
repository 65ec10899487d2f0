//go:build windows

package p2pd

import (
	"errors"
	"os"
	"syscall"
)

// haveRawRead is false: RawConn.Read does not wait for readiness on
// Windows, so TCP connections read through net.Conn and hold a buffer.
const haveRawRead = false

// BUG(p2pd): On Windows, an idle TCP connection keeps its read buffer.

func readRaw(fd uintptr, b []byte) (int, bool, error) { return 0, false, ErrUnsupported } // never called: haveRawRead is false

const wsaeaddrinuse = syscall.Errno(10048)

func setSockopts(rc syscall.RawConn, reuse, bcast bool) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if reuse {
			if serr = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); serr != nil {
				serr = os.NewSyscallError("setsockopt SO_REUSEADDR", serr)
				return
			}
		}
		if bcast {
			if serr = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1); serr != nil {
				serr = os.NewSyscallError("setsockopt SO_BROADCAST", serr)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func isAddrInUse(err error) bool {
	return errors.Is(err, wsaeaddrinuse) || errors.Is(err, syscall.EADDRINUSE)
}
