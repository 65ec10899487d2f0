package p2pd

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// setFreeBind sets IP_FREEBIND (IPV6_FREEBIND on IPv6 sockets).
func setFreeBind(rc syscall.RawConn, v6 bool) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt FREEBIND", serr)
}
