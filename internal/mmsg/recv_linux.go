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

// MaxBatch is the most slots a batch has: recvmmsg reads no more
// (UIO_MAXIOV).
const MaxBatch = 1024

// RecvBatch is a set of receive slots for one recvmmsg call. Get one from
// GetRecv when the socket is readable and give it back with PutRecv when
// it is not: a socket waiting for traffic then holds no buffer.
//
// Its memory is ordinary Go heap memory (which does not move), pointed to
// by the headers the kernel reads: a datagram's slice kept after PutRecv
// keeps it alive, and at worst sees later datagrams written over it.
type RecvBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []Sockaddr
	mem   []byte // n*slot bytes of datagrams
	ctrl  []byte // n*CtrlSize bytes of control messages, or nil
	slot  int
	pool  *sync.Pool
}

// poolKey is a batch's size, n<<32 | slot<<1 | ctrl: an integer key
// hashes faster than a struct.
type poolKey uint64

// pools holds the idle batches of each size. A sync.Pool frees what is
// not taken again within two GCs, so the batches left after a burst are
// freed (the runtime runs a GC at least every two minutes).
var pools sync.Map // poolKey → *sync.Pool of *RecvBatch

// GetRecv returns a batch of n slots of slot bytes each (slot is clamped
// to 1..MaxSlot, n to 1..MaxBatch), with room for control messages (see
// Pktinfo) if ctrl is set.
func GetRecv(n, slot int, ctrl bool) *RecvBatch {
	n, slot = min(max(n, 1), MaxBatch), min(max(slot, 1), MaxSlot)
	k := poolKey(n)<<32 | poolKey(slot)<<1
	if ctrl {
		k |= 1
	}
	v, ok := pools.Load(k)
	if !ok {
		v, _ = pools.LoadOrStore(k, new(sync.Pool))
	}
	p := v.(*sync.Pool)
	if b, _ := p.Get().(*RecvBatch); b != nil {
		return b
	}
	return newRecv(n, slot, ctrl, p)
}

// PutRecv gives b back to its pool: use neither b nor its datagrams'
// slices afterwards (a slice kept anyway stays readable, but another
// socket may write over it at any time).
func PutRecv(b *RecvBatch) {
	if b != nil {
		b.pool.Put(b)
	}
}

func newRecv(n, slot int, ctrl bool, p *sync.Pool) *RecvBatch {
	b := &RecvBatch{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]Sockaddr, n),
		mem:   make([]byte, n*slot),
		slot:  slot,
		pool:  p,
	}
	if ctrl {
		b.ctrl = make([]byte, n*CtrlSize)
	}
	for i := range b.hdrs {
		b.iovs[i].Base = &b.mem[i*slot]
		b.iovs[i].SetLen(slot)
		h := &b.hdrs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		if b.ctrl != nil {
			h.Control = &b.ctrl[i*CtrlSize]
		}
	}
	return b
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
			h.SetControllen(CtrlSize)
		}
		b.hdrs[i].Len = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		// The headers reach the slots through Go pointers, which the GC
		// sees; b itself stays alive until the kernel is done.
		runtime.KeepAlive(b)
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Msg returns datagram i of the last Recv: its bytes (overwritten by the
// next Recv into this batch, and after PutRecv by whichever socket takes
// it next), its sender with the IPv6 scope id, and whether it was
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
