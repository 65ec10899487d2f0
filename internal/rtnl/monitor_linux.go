package rtnl

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Monitor receives the kernel's notifications of address and link changes
// (RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR) in the network
// namespace of the thread that opened it.
type Monitor struct {
	f   *os.File // non-blocking: Go's poller waits for it, Close wakes it
	buf []byte
}

// OpenMonitor subscribes to address and link changes.
func OpenMonitor() (*Monitor, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("rtnl: netlink socket: %w", err)
	}
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnl: netlink bind: %w", err)
	}
	return &Monitor{f: os.NewFile(uintptr(fd), "rtnetlink monitor"), buf: make([]byte, 32<<10)}, nil
}

// Next waits for notifications and returns how many address or link
// changes it read (everything queued at that moment). It returns
// ErrOverflow when some were lost, and an error once the monitor is
// closed.
func (m *Monitor) Next() (int, error) {
	rc, err := m.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	changes := 0
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, err := unix.Recvfrom(int(fd), m.buf, unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return changes > 0 // nothing yet: wait; else done
			case err == unix.ENOBUFS:
				rerr = ErrOverflow
				return true
			case err != nil:
				rerr = fmt.Errorf("rtnl: netlink receive: %w", err)
				return true
			}
			parseMsgs(m.buf[:n], func(typ, _ uint16, _, _ uint32, _ []byte) error {
				switch typ {
				case rtmNewAddr, rtmDelAddr, rtmNewLink, rtmDelLink:
					changes++
				}
				return nil
			})
			if changes == 0 {
				continue // other messages only: keep reading
			}
		}
	})
	if err != nil {
		return changes, err
	}
	return changes, rerr
}

// Close ends the subscription; a Next in progress returns.
func (m *Monitor) Close() error { return m.f.Close() }

const (
	rtmNewLink = 16 // RTM_NEWLINK
	rtmDelLink = 17 // RTM_DELLINK
	rtmDelAddr = 21 // RTM_DELADDR
)
