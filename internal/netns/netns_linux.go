// Package netns holds on to the network namespace of the thread that
// asked, so that a goroutine started later can do its I/O there (a caller
// that entered a namespace with its thread locked expects a daemon's
// background work to happen in it too).
package netns

import (
	"os"

	"golang.org/x/sys/unix"
)

// NS is a handle on the network namespace of the thread that made it.
type NS struct {
	fd      int
	foreign bool // not the process's own namespace
}

// processNetns is the network namespace the process started in, read by
// the main thread at init, before any thread could enter another. (Later,
// /proc/self/ns/net is the main thread's, which may have moved: Go runs
// goroutines, and a caller's LockOSThread, on the main thread too.)
var processNetns, processNetnsErr = statNetns()

func statNetns() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/thread-self/ns/net", &st)
	return st, err
}

// Current returns the calling thread's namespace.
func Current() (*NS, error) {
	if processNetnsErr != nil {
		return nil, os.NewSyscallError("stat netns", processNetnsErr)
	}
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open netns", err)
	}
	var mine unix.Stat_t
	if err := unix.Fstat(fd, &mine); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fstat netns", err)
	}
	return &NS{fd: fd, foreign: mine.Ino != processNetns.Ino || mine.Dev != processNetns.Dev}, nil
}

// Foreign reports whether n is not the process's own namespace.
func (n *NS) Foreign() bool { return n != nil && n.foreign }

// Enter moves the calling thread (locked by the caller) into n.
func (n *NS) Enter() error {
	return os.NewSyscallError("setns", unix.Setns(n.fd, unix.CLONE_NEWNET))
}

// Close releases n.
func (n *NS) Close() {
	if n != nil && n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
}
