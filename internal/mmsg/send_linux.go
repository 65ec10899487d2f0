package mmsg

import (
	"bytes"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SendBatch queues datagrams (copies of them) for one sendmmsg call. With
// a GSO (SetGSO), datagrams queued in a row for one destination are
// coalesced into one entry (see gso_linux.go).
type SendBatch struct {
	family int // unix.AF_INET or unix.AF_INET6
	hdrs   []unix.Mmsghdr
	iovs   []unix.Iovec
	names  []Sockaddr
	ctrl   []byte // CtrlSize bytes per entry
	clen   []int  // length of entry i's PKTINFO, 0 for none
	offs   []int  // start of entry i in data; it ends at offs[i+1]
	segs   []int  // datagrams in entry i: all size[i] bytes long but the last
	size   []int  // the length of entry i's first datagram
	split  []bool // entry i is sent one datagram at a time (its GSO refused)
	data   []byte
	n      int // entries queued
	next   int // first entry not yet sent
	queued int // datagrams queued and not yet sent
	gso    *GSO
	blame  unix.Errno // the refusal of the split entry next, GSO's if its first datagram alone goes
}

// NewSendBatch returns an empty batch of up to n entries for a socket of
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
		segs:   make([]int, n),
		size:   make([]int, n),
		split:  make([]bool, n),
	}
}

// maxData bounds the bytes a batch queues before it must be sent.
const maxData = 1 << 20

// SetGSO makes the batch coalesce datagrams as g allows (nil: never), for
// the socket g belongs to; set it before adding, and to nil before
// handing the batch to another socket.
func (s *SendBatch) SetGSO(g *GSO) { s.gso = g }

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
	if s.n > 0 && len(s.data)+len(msg) > maxData {
		return false
	}
	sa, tmp := &s.names[min(s.n, len(s.names)-1)], Sockaddr{}
	if s.n == len(s.hdrs) {
		sa = &tmp // full: only coalescing is left
	}
	nl, ok := putSockaddr(sa, s.family, to, scope)
	if !ok {
		return false
	}
	if s.coalesce(msg, sa, nl, src, ifindex) {
		return true
	}
	if s.n == len(s.hdrs) {
		return false
	}
	i := s.n
	s.hdrs[i].Hdr.Namelen = nl
	s.clen[i] = PutPktinfo(s.ctrl[i*CtrlSize:(i+1)*CtrlSize], src, ifindex)
	s.offs[i] = len(s.data)
	s.data = append(s.data, msg...)
	s.segs[i], s.size[i], s.split[i] = 1, len(msg), false
	s.n++
	s.offs[s.n] = len(s.data)
	s.queued++
	return true
}

// coalesce appends msg to the last entry if GSO allows and the entry goes
// to the same sockaddr (sa, nl bytes) from the same source.
func (s *SendBatch) coalesce(msg []byte, sa *Sockaddr, nl uint32, src netip.Addr, ifindex int) bool {
	g, i := s.gso, s.n-1
	if g == nil || i < s.next || s.split[i] || len(msg) == 0 {
		return false
	}
	size, l := s.size[i], s.offs[i+1]-s.offs[i]
	if len(msg) > size || size > g.max || s.segs[i] >= maxSegs || l != s.segs[i]*size || l+len(msg) > maxGSOBytes {
		return false // a longer one, a short one already last, or too much
	}
	if nl != s.hdrs[i].Hdr.Namelen || !bytes.Equal(sockaddrBytes(sa)[:nl], sockaddrBytes(&s.names[i])[:nl]) {
		return false
	}
	if s.clen[i] > 0 || src.IsValid() {
		var c [CtrlSize]byte
		if cl := PutPktinfo(c[:], src, ifindex); cl != s.clen[i] || !bytes.Equal(c[:cl], s.ctrl[i*CtrlSize:i*CtrlSize+cl]) {
			return false
		}
	}
	s.data = append(s.data, msg...)
	s.offs[i+1] = len(s.data)
	s.segs[i]++
	s.queued++
	return true
}

// Pending returns the number of datagrams queued and not yet sent.
func (s *SendBatch) Pending() int { return s.queued }

// Cap returns the bytes the batch holds for queued data.
func (s *SendBatch) Cap() int { return cap(s.data) }

// Full reports whether every entry is taken: Add then only coalesces.
func (s *SendBatch) Full() bool { return s.n == len(s.hdrs) }

// Send makes one sendmmsg call on the non-blocking socket fd for the
// pending datagrams. It returns unix.EAGAIN when the socket buffer is full
// (wait for writability and call again). Any other error belongs to the
// first pending datagram: Skip it and call again. An entry of several
// datagrams the kernel refuses is sent again one datagram at a time.
func (s *SendBatch) Send(fd uintptr) error {
	if s.next == s.n {
		return nil
	}
	// data may have moved while growing: point the iovecs at it now. The
	// call ends before an entry to send one by one: one coalesced when
	// GSO allowed more than it does now.
	end := s.n
	for i := s.next; i < s.n; i++ {
		if s.segs[i] > 1 && (s.gso == nil || s.size[i] > s.gso.max) {
			s.split[i] = true
		}
		if s.split[i] {
			if i == s.next {
				return s.sendSplit(fd)
			}
			end = i
			break
		}
		cl := s.clen[i]
		if s.segs[i] > 1 {
			cl += putSegment(s.ctrl[i*CtrlSize+cl:], s.size[i])
		}
		s.point(i, s.offs[i], s.offs[i+1]-s.offs[i], cl)
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[s.next])), uintptr(end-s.next), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == 0:
			for range n {
				if s.segs[s.next] > 1 && s.gso != nil {
					s.gso.sent++
				}
				s.queued -= s.segs[s.next]
				s.next++
			}
			if s.next == s.n {
				s.Reset()
			}
			return nil
		case e == unix.EINTR:
			continue
		case e != unix.EAGAIN && s.segs[s.next] > 1:
			s.split[s.next], s.blame = true, e
			return s.sendSplit(fd)
		}
		return e
	}
}

// point sets entry i's header to send l bytes of data from off, with cl
// bytes of control messages.
func (s *SendBatch) point(i, off, l, cl int) {
	h := &s.hdrs[i].Hdr
	if l > 0 {
		s.iovs[i].Base = &s.data[off]
	} else {
		s.iovs[i].Base = nil
	}
	s.iovs[i].SetLen(l)
	h.Iov = &s.iovs[i]
	h.SetIovlen(1)
	h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
	if cl > 0 {
		h.Control = &s.ctrl[i*CtrlSize]
	} else {
		h.Control = nil
	}
	h.SetControllen(cl)
}

// sendSplit sends the datagrams of the first pending entry one by one. If
// the first goes where the entry was refused, the refusal was GSO's (else
// the datagrams', a bad destination say): the GSO state learns it.
func (s *SendBatch) sendSplit(fd uintptr) error {
	i := s.next
	for s.segs[i] > 0 {
		s.point(i, s.offs[i], min(s.size[i], s.offs[i+1]-s.offs[i]), s.clen[i])
		_, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[i].Hdr)), unix.MSG_DONTWAIT)
		switch e {
		case 0:
			if s.blame != 0 && s.gso != nil {
				s.gso.refuse(s.blame, s.size[i])
			}
			s.blame = 0
			s.dropOne()
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return e
		}
		s.blame = 0
		return e
	}
	return nil
}

// dropOne counts the first datagram of the first pending entry as done.
func (s *SendBatch) dropOne() {
	i := s.next
	s.offs[i] += min(s.size[i], s.offs[i+1]-s.offs[i])
	s.segs[i]--
	s.queued--
	if s.segs[i] == 0 {
		s.next++
		if s.next == s.n {
			s.Reset()
		}
	}
}

// Skip drops the first pending datagram (after an error).
func (s *SendBatch) Skip() {
	if s.next < s.n {
		s.split[s.next] = true // the rest of its entry goes one by one
		s.dropOne()
	}
}

// Reset drops everything queued; the buffers stay for reuse.
func (s *SendBatch) Reset() {
	for i := range s.n {
		s.iovs[i].Base = nil
		s.hdrs[i].Hdr.Control = nil
	}
	s.n, s.next, s.queued, s.blame, s.data = 0, 0, 0, 0, s.data[:0]
}
