//go:build unix

package systemd

import "golang.org/x/sys/unix"

const activationSupported = true

func setCloexec(fd int) error {
	// F_GETFD first: unix.CloseOnExec ignores errors, and a descriptor
	// that is not open must be reported.
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return err
	}
	if flags&unix.FD_CLOEXEC != 0 {
		return nil
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC)
	return err
}
