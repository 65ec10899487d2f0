package mmsg

import (
	"net/netip"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported reports whether batched reads and writes exist here.
const Supported = true

// MaxSlot is the largest receive slot: no UDP datagram is longer.
const MaxSlot = 64 << 10

// RecvBatch is a set of receive slots for one recvmmsg call. Get one from
// GetRecv when the socket is readable and give it back with PutRecv when
// it is not: a socket waiting for traffic then holds no buffer.
type RecvBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []Sockaddr
	mem   []byte // n*slot bytes, mapped outside the Go heap
	ctrl  []byte // n*CtrlSize bytes of control messages, or nil
	slot  int
	key   poolKey
}

type poolKey struct {
	n, slot int
	ctrl    bool
}

type pool struct {
	mu   sync.Mutex
	free []*RecvBatch
}

var pools sync.Map // poolKey → *pool

// keep is how many idle batches of one size the pool keeps mapped; the
// rest are unmapped when put back. Only sockets busy at the same moment
// hold a batch, so a few per CPU suffice.
func keep() int { return 4*runtime.GOMAXPROCS(0) + 4 }

// GetRecv returns a batch of n slots of slot bytes each (slot is clamped
// to 1..MaxSlot, n to at least 1), with room for control messages (see
// Pktinfo) if ctrl is set.
func GetRecv(n, slot int, ctrl bool) (*RecvBatch, error) {
	n, slot = max(n, 1), min(max(slot, 1), MaxSlot)
	k := poolKey{n, slot, ctrl}
	v, ok := pools.Load(k)
	if !ok {
		v, _ = pools.LoadOrStore(k, new(pool))
	}
	p := v.(*pool)
	p.mu.Lock()
	if l := len(p.free); l > 0 {
		b := p.free[l-1]
		p.free[l-1] = nil
		p.free = p.free[:l-1]
		p.mu.Unlock()
		return b, nil
	}
	p.mu.Unlock()
	return newRecv(k)
}

// PutRecv gives b back to the pool; b must not be used afterwards.
func PutRecv(b *RecvBatch) {
	if b == nil {
		return
	}
	v, _ := pools.Load(b.key)
	p := v.(*pool)
	p.mu.Lock()
	if len(p.free) < keep() {
		p.free = append(p.free, b)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	b.unmap()
}

func newRecv(k poolKey) (*RecvBatch, error) {
	mem, err := unix.Mmap(-1, 0, k.n*k.slot, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	b := &RecvBatch{
		hdrs:  make([]unix.Mmsghdr, k.n),
		iovs:  make([]unix.Iovec, k.n),
		names: make([]Sockaddr, k.n),
		mem:   mem,
		slot:  k.slot,
		key:   k,
	}
	if k.ctrl {
		b.ctrl = make([]byte, k.n*CtrlSize)
	}
	for i := range b.hdrs {
		b.iovs[i].Base = &mem[i*k.slot]
		b.iovs[i].SetLen(k.slot)
		h := &b.hdrs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
	return b, nil
}

func (b *RecvBatch) unmap() {
	if b.mem != nil {
		unix.Munmap(b.mem)
		b.mem = nil
	}
}

// Len returns the number of slots.
func (b *RecvBatch) Len() int { return len(b.hdrs) }

// Recv reads up to Len datagrams from the non-blocking socket fd without
// waiting: it returns unix.EAGAIN when there is none.
func (b *RecvBatch) Recv(fd uintptr) (int, error) {
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.Flags = 0
		if b.ctrl != nil {
			h.Control = &b.ctrl[i*CtrlSize]
			h.SetControllen(CtrlSize)
		}
		b.hdrs[i].Len = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// Msg returns datagram i of the last Recv: its bytes (valid until the next
// Recv or PutRecv), its sender with the IPv6 scope id, and whether it was
// truncated to the slot size.
func (b *RecvBatch) Msg(i int) (msg []byte, from netip.AddrPort, scope uint32, trunc bool) {
	h := &b.hdrs[i]
	n := min(int(h.Len), b.slot)
	off := i * b.slot
	from, scope, _ = ParseSockaddr(sockaddrBytes(&b.names[i]), int(h.Hdr.Namelen))
	return b.mem[off : off+n : off+n], from, scope, h.Hdr.Flags&unix.MSG_TRUNC != 0
}

// Ctrl returns the control messages of datagram i of the last Recv (nil
// for a batch without room for them).
func (b *RecvBatch) Ctrl(i int) []byte {
	if b.ctrl == nil {
		return nil
	}
	n := min(int(b.hdrs[i].Hdr.Controllen), CtrlSize)
	return b.ctrl[i*CtrlSize : i*CtrlSize+n]
}
