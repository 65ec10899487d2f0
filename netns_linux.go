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

func currentNetns() (*netns, error) {
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open netns", err)
	}
	var mine, proc unix.Stat_t
	if err := unix.Fstat(fd, &mine); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fstat netns", err)
	}
	if err := unix.Stat("/proc/self/ns/net", &proc); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("stat netns", err)
	}
	return &netns{fd: fd, foreign: mine.Ino != proc.Ino || mine.Dev != proc.Dev}, nil
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
