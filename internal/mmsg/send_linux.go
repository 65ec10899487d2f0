package mmsg

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SendBatch queues datagrams (copies of them) for one sendmmsg call.
type SendBatch struct {
	family int // unix.AF_INET or unix.AF_INET6
	hdrs   []unix.Mmsghdr
	iovs   []unix.Iovec
	names  []Sockaddr
	ctrl   []byte // CtrlSize bytes per datagram
	clen   []int  // length of datagram i's control message, 0 for none
	offs   []int  // start of datagram i in data; it ends at offs[i+1]
	data   []byte
	n      int // queued
	next   int // first not yet sent
}

// NewSendBatch returns an empty batch of up to n datagrams for a socket of
// the given family (unix.AF_INET or unix.AF_INET6).
func NewSendBatch(n, family int) *SendBatch {
	n = max(n, 1)
	return &SendBatch{
		family: family,
		hdrs:   make([]unix.Mmsghdr, n),
		iovs:   make([]unix.Iovec, n),
		names:  make([]Sockaddr, n),
		ctrl:   make([]byte, n*CtrlSize),
		clen:   make([]int, n),
		offs:   make([]int, n+1),
	}
}

// maxData bounds the bytes a batch queues before it must be sent.
const maxData = 1 << 20

// Add queues a copy of msg for to (scope is the IPv6 scope id, 0 for
// none). It returns false, queuing nothing, when the batch is full or
// when to cannot be sent on this socket's family: send it some other way.
func (s *SendBatch) Add(msg []byte, to netip.AddrPort, scope uint32) bool {
	return s.AddFrom(msg, to, scope, netip.Addr{}, 0)
}

// AddFrom is Add for a datagram sent from the local address src through
// interface ifindex (IP_PKTINFO / IPV6_PKTINFO); an invalid src lets the
// system choose, as Add does.
func (s *SendBatch) AddFrom(msg []byte, to netip.AddrPort, scope uint32, src netip.Addr, ifindex int) bool {
	if s.n == len(s.hdrs) || (s.n > 0 && len(s.data)+len(msg) > maxData) {
		return false
	}
	nl, ok := putSockaddr(&s.names[s.n], s.family, to, scope)
	if !ok {
		return false
	}
	s.hdrs[s.n].Hdr.Namelen = nl
	s.clen[s.n] = PutPktinfo(s.ctrl[s.n*CtrlSize:(s.n+1)*CtrlSize], src, ifindex)
	s.offs[s.n] = len(s.data)
	s.data = append(s.data, msg...)
	s.n++
	s.offs[s.n] = len(s.data)
	return true
}

// Pending returns the number of datagrams queued and not yet sent.
func (s *SendBatch) Pending() int { return s.n - s.next }

// Cap returns the bytes the batch holds for queued data.
func (s *SendBatch) Cap() int { return cap(s.data) }

// Full reports whether Add would refuse any further datagram.
func (s *SendBatch) Full() bool { return s.n == len(s.hdrs) }

// Send makes one sendmmsg call on the non-blocking socket fd for the
// pending datagrams. It returns unix.EAGAIN when the socket buffer is full
// (wait for writability and call again). Any other error belongs to the
// first pending datagram: Skip it and call again.
func (s *SendBatch) Send(fd uintptr) error {
	if s.next == s.n {
		return nil
	}
	// data may have moved while growing: point the iovecs at it now.
	for i := s.next; i < s.n; i++ {
		h := &s.hdrs[i].Hdr
		if l := s.offs[i+1] - s.offs[i]; l > 0 {
			s.iovs[i].Base = &s.data[s.offs[i]]
			s.iovs[i].SetLen(l)
		} else {
			s.iovs[i].Base = nil
			s.iovs[i].SetLen(0)
		}
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
		if s.clen[i] > 0 {
			h.Control = &s.ctrl[i*CtrlSize]
			h.SetControllen(s.clen[i])
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[s.next])), uintptr(s.n-s.next), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			s.next += int(n)
			if s.next == s.n {
				s.Reset()
			}
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

// Skip drops the first pending datagram (after an error).
func (s *SendBatch) Skip() {
	if s.next < s.n {
		s.next++
	}
	if s.next == s.n {
		s.Reset()
	}
}

// Reset drops everything queued; the buffers stay for reuse.
func (s *SendBatch) Reset() {
	for i := range s.n {
		s.iovs[i].Base = nil
	}
	s.n, s.next, s.data = 0, 0, s.data[:0]
}
