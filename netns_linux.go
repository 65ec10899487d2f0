package p2pd

import (
	"os"

	"golang.org/x/sys/unix"
)

// netns is a handle on the network namespace of the thread that made it.
type netns struct {
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

func currentNetns() (*netns, error) {
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
	return &netns{fd: fd, foreign: mine.Ino != processNetns.Ino || mine.Dev != processNetns.Dev}, nil
}

func (n *netns) isForeign() bool { return n != nil && n.foreign }

// enter moves the calling thread (locked by the caller) into n.
func (n *netns) enter() error {
	return os.NewSyscallError("setns", unix.Setns(n.fd, unix.CLONE_NEWNET))
}

func (n *netns) close() {
	if n != nil && n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
}
