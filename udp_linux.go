package p2pd

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/p2pd/p2pd/internal/mmsg"
)

// udpBatch is the batched I/O of a UDP pipe on Linux. Its goroutine reads
// up to n datagrams per recvmmsg into a receive batch taken from a pool
// only while the socket has data, so an idle pipe holds no buffer. While
// it dispatches a batch, Sends on the pipe are queued and leave together
// in one sendmmsg when the batch's callbacks have returned, or when the
// queue is full; a batch still running after stuckAfter (a callback that
// blocks) has its queue sent by the watchdog (udp_watch_linux.go), so it
// holds nobody's replies for long.
type udpBatch struct {
	rc     syscall.RawConn
	family int    // unix.AF_INET or unix.AF_INET6
	scope  uint32 // the bound address's IPv6 scope id, 0 if none
	zone   string // its zone as the pipe knows it
	n      int
	slot   int

	conn *net.UDPConn // the socket
	sock uint16       // its index among the pipe's sockets (see fanout.go)

	// A wildcard socket learns, with IP_PKTINFO / IPV6_PKTINFO, which of
	// the host's addresses each datagram was sent to; the callback gets it
	// in the Peer, and Send answers a Peer from it.
	pktinfo bool

	// Reader-only state.
	recv    *mmsg.RecvBatch
	nrecv   int
	rerr    error
	zones   map[uint32]string // scope id → zone name cache
	read    func(fd uintptr) bool
	parkNow bool // nothing to read ends the read with errParkNow

	active  atomic.Bool  // a batch is being dispatched (hint; mu decides)
	since   atomic.Int64 // when that batch began (watchClock), 0 if none
	watched atomic.Bool  // in the watchdog's set

	mu       sync.Mutex
	p        *Pipe
	q        *mmsg.SendBatch
	gso      *mmsg.GSO // nil: UDP_SEGMENT unknown here (udp_gso_linux.go)
	gsoAsked bool      // the socket was asked, at the first batch
	closed   bool
	serr     error
	write    func(fd uintptr) bool

	sendErrs atomic.Uint64 // queued replies the system refused
	lastLog  atomic.Int64
	batches  atomic.Uint64 // batches of more than one datagram
	queued   atomic.Uint64 // Sends queued
	holding  atomic.Bool   // the reader holds a receive batch
}

// initBatch sets up batched I/O for a *net.UDPConn pipe, before its
// goroutine starts, asking the socket for its family and scope. Without it
// (an error here) the pipe reads one datagram at a time.
func (p *Pipe) initBatch() { p.ub = p.newBatch(p.udp, 0) }

// newBatch makes the batched I/O of c, the pipe's socket number sock; nil
// when c's family and scope cannot be read.
func (p *Pipe) newBatch(c *net.UDPConn, sock uint16) *udpBatch {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var u *udpBatch
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok && ua.Zone == "" && (len(ua.IP) == net.IPv4len || len(ua.IP) == net.IPv6len) {
		// The family is the address's length (Go reads it from the
		// socket's own sockaddr), and there is no scope: no system call.
		family := unix.AF_INET6
		if len(ua.IP) == net.IPv4len {
			family = unix.AF_INET
		}
		u = p.setBatch(rc, family, 0)
		u.conn, u.sock = c, sock
		return u
	}
	var sa unix.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil || serr != nil {
		return nil
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		u = p.setBatch(rc, unix.AF_INET, 0)
	case *unix.SockaddrInet6:
		u = p.setBatch(rc, unix.AF_INET6, sa.ZoneId)
	}
	if u != nil {
		u.conn, u.sock = c, sock
	}
	return u
}

func (p *Pipe) setBatch(rc syscall.RawConn, family int, scope uint32) *udpBatch {
	u := &udpBatch{rc: rc, p: p, family: family, scope: scope,
		n: p.cfg.udpBatch(), slot: p.cfg.bufferSize(UDP), zone: p.local.Addr().Zone()}
	u.read = u.readFn
	u.write = u.writeFn
	if p.server && p.local.Addr().IsUnspecified() {
		u.pktinfo = setRecvPktinfo(rc, family) == nil
		if u.pktinfo && family == unix.AF_INET6 {
			u.zones = interfaceNames()
		}
	}
	return u
}

// setRecvPktinfo asks for IP_PKTINFO or IPV6_PKTINFO with every datagram.
func setRecvPktinfo(rc syscall.RawConn, family int) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if family == unix.AF_INET {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// direct sends one datagram at once from the local address and through
// the interface that peer names, on a wildcard socket; handled is false
// for other sockets, and for a Peer that names neither.
func (u *udpBatch) direct(p *Pipe, msg []byte, to netip.AddrPort, peer Peer) (handled bool, err error) {
	src, ifindex := u.source(peer)
	if !src.IsValid() && ifindex == 0 {
		return false, nil
	}
	var oob [mmsg.CtrlSize]byte
	n := mmsg.PutPktinfo(oob[:], src, ifindex)
	_, _, err = u.conn.WriteMsgUDPAddrPort(msg, oob[:n], to)
	return true, err
}

// readFn runs inside RawConn.Read: one recvmmsg, holding a receive batch
// only while there is something to read.
func (u *udpBatch) readFn(fd uintptr) bool {
	if u.recv == nil {
		u.recv = mmsg.GetRecv(u.n, u.slot, u.pktinfo)
		u.holding.Store(true)
	}
	u.nrecv, u.rerr = u.recv.Recv(fd)
	if u.rerr == unix.EAGAIN {
		u.release()
		if u.parkNow {
			u.rerr = errParkNow
			return true
		}
		return false
	}
	return true
}

func (u *udpBatch) release() {
	if u.recv != nil {
		mmsg.PutRecv(u.recv)
		u.recv = nil
		u.holding.Store(false)
	}
}

func (u *udpBatch) holdsBuffers() bool { return u.holding.Load() }

func (u *udpBatch) sendDropped() uint64 { return u.sendErrs.Load() }

// udpBatchLoop reads and dispatches u's batches until the pipe ends, or,
// on a server socket that can park, until it parks (errParked): at once
// when nothing has come since the loop began, or after parkAfter of
// silence. It touches nothing once parked: the parker may have started
// the next loop.
func (p *Pipe) udpBatchLoop(u *udpBatch) error {
	var delay time.Duration
	var dl deadline
	if u == p.ub && p.canPark() {
		dl.init(p.udp.SetReadDeadline)
		u.parkNow = true
	}
	for {
		dl.keep()
		if dl.on && (p.closed.Load() || p.draining.Load()) {
			u.release()
			return nil // a drain's deadline may have been set before keep's
		}
		err := u.rc.Read(u.read)
		if err == nil && u.rerr == errParkNow {
			if p.park() {
				return errParked
			}
			dl.off()
			u.parkNow = false
			continue
		}
		if err == nil && u.rerr != nil {
			err = os.NewSyscallError("recvmmsg", u.rerr)
		}
		if err != nil {
			if handled, parked := p.timedOut(&dl, err); parked {
				return errParked
			} else if handled {
				continue
			}
			if end, reason := p.udpReadError(err, &delay); end {
				u.release()
				return reason
			}
			continue
		}
		delay = 0
		if dl.on {
			dl.last = time.Now()
			u.parkNow = false
		}
		p.dispatchBatch(u, u.recv, u.nrecv)
	}
}

func (p *Pipe) dispatchBatch(u *udpBatch, b *mmsg.RecvBatch, n int) {
	queue := n > 1
	if queue {
		u.batches.Add(1)
		u.begin()
	}
	for i := range n {
		if p.closed.Load() || p.draining.Load() {
			// Closed or shutting down (maybe by a callback): the rest of
			// the batch is not handed on.
			p.stats.shutdownDropped.Add(uint64(n - i))
			break
		}
		msg, from, scope, trunc := b.Msg(i)
		if scope != 0 {
			from = netip.AddrPortFrom(from.Addr().WithZone(u.zoneOf(scope)), from.Port())
		}
		peer := Peer{AddrPort: from, Local: p.local, Truncated: trunc, sock: u.sock}
		if u.pktinfo {
			peer.Local = netip.AddrPort{}
			if pi, ok := mmsg.ParsePktinfo(b.Ctrl(i)); ok {
				peer.IfIndex = pi.IfIndex
				if src := pi.Local; src.IsValid() && !src.IsUnspecified() && !src.IsMulticast() {
					if src.Is6() && src.IsLinkLocalUnicast() {
						src = src.WithZone(u.zoneOf(uint32(pi.IfIndex)))
					}
					peer.Local = netip.AddrPortFrom(src, p.local.Port())
				}
			}
		}
		p.dispatch(msg, peer)
	}
	if queue {
		u.end()
	}
}

// source is the address and interface to answer peer from on a wildcard
// socket: what the datagram it came with said (see Peer). The zero Addr
// and 0 let the system choose.
func (u *udpBatch) source(peer Peer) (netip.Addr, int) {
	if !u.pktinfo {
		return netip.Addr{}, 0
	}
	return peer.Local.Addr().WithZone(""), peer.IfIndex
}

// zoneOf names the interface of an IPv6 scope id: the bound address's
// zone, or a name known when the pipe started, else the number. It does
// not ask the system now: the reader's thread may sit in another network
// namespace than the socket (a pipe opened by a thread that entered one),
// where the same index names another interface.
func (u *udpBatch) zoneOf(scope uint32) string {
	if scope == u.scope && u.zone != "" {
		return u.zone
	}
	if z, ok := u.zones[scope]; ok {
		return z
	}
	return strconv.FormatUint(uint64(scope), 10)
}

// numericZone replaces an interface name used as to's zone by its index:
// one the pipe knows (names seen when it started, in its own namespace),
// else the system's (see resolveZone).
func (p *Pipe) numericZone(to netip.AddrPort) (netip.AddrPort, error) {
	z := to.Addr().Zone()
	if u := p.ub; u != nil {
		for i, name := range u.zones {
			if name == z {
				return netip.AddrPortFrom(to.Addr().WithZone(strconv.FormatUint(uint64(i), 10)), to.Port()), nil
			}
		}
	}
	return resolveZone(to)
}

// interfaceNames maps the interface indexes to names, in the calling
// thread's network namespace.
func interfaceNames() map[uint32]string {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	m := make(map[uint32]string, len(ifs))
	for _, ifc := range ifs {
		m[uint32(ifc.Index)] = ifc.Name
	}
	return m
}

var sendBatches sync.Map // [2]int{n, family} → *sync.Pool of *mmsg.SendBatch

func getSendBatch(n, family int) *mmsg.SendBatch {
	v, ok := sendBatches.Load([2]int{n, family})
	if !ok {
		v, _ = sendBatches.LoadOrStore([2]int{n, family}, new(sync.Pool))
	}
	if q, _ := v.(*sync.Pool).Get().(*mmsg.SendBatch); q != nil {
		return q
	}
	return mmsg.NewSendBatch(n, family)
}

func putSendBatch(q *mmsg.SendBatch, n, family int) {
	if q.Cap() > 256<<10 {
		return // after a burst of large replies: let it go
	}
	if v, ok := sendBatches.Load([2]int{n, family}); ok {
		v.(*sync.Pool).Put(q)
	}
}

// begin starts queueing Sends.
func (u *udpBatch) begin() {
	u.mu.Lock()
	if !u.closed {
		u.q = getSendBatch(u.n, u.family)
		u.useGSO()
		u.active.Store(true)
		u.since.Store(watchClock())
	}
	u.mu.Unlock()
	u.p.cfg.dog.wake(u)
}

// end sends what is queued and stops queueing.
func (u *udpBatch) end() {
	u.mu.Lock()
	if u.q != nil {
		u.flushLocked()
		u.q.SetGSO(nil)
		putSendBatch(u.q, u.n, u.family)
		u.q = nil
	}
	u.active.Store(false)
	u.since.Store(0)
	u.mu.Unlock()
}

// queue queues a copy of msg for to if a batch is being dispatched, and
// reports whether it did. A destination with a zone other than the bound
// address's is sent at once.
func (u *udpBatch) queue(p *Pipe, msg []byte, to netip.AddrPort, peer Peer) bool {
	if !u.active.Load() {
		return false
	}
	var scope uint32
	if z := to.Addr().Zone(); z != "" {
		if z != u.zone || u.scope == 0 {
			return false
		}
		scope = u.scope
	}
	src, ifindex := u.source(peer)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.q == nil || u.closed {
		return false
	}
	if !u.q.AddFrom(msg, to, scope, src, ifindex) {
		if !u.q.Full() && u.q.Pending() == 0 {
			return false // not sendable on this socket: let the plain path report why
		}
		u.flushLocked()
		if !u.q.AddFrom(msg, to, scope, src, ifindex) {
			return false
		}
	}
	u.queued.Add(1)
	return true
}

// flushStuck sends the queue of the batch that began at since, if it is
// still running: called by the watchdog.
func (u *udpBatch) flushStuck(since int64) {
	u.mu.Lock()
	if u.q != nil && !u.closed && u.since.Load() == since {
		u.flushLocked()
	}
	u.mu.Unlock()
}

func (u *udpBatch) writeFn(fd uintptr) bool {
	u.serr = u.q.Send(fd)
	return u.serr != unix.EAGAIN
}

// flushLocked sends everything queued. A datagram the system refuses is
// dropped, counted and logged: its Send has already returned nil.
func (u *udpBatch) flushLocked() {
	for u.q.Pending() > 0 {
		if err := u.rc.Write(u.write); err != nil {
			u.failed(err, u.q.Pending())
			u.q.Reset()
			return
		}
		if u.serr != nil {
			u.failed(os.NewSyscallError("sendmmsg", u.serr), 1)
			u.q.Skip()
		}
	}
}

// failed counts dropped replies and logs at most one line per second.
func (u *udpBatch) failed(err error, n int) {
	total := u.sendErrs.Add(uint64(n))
	if u.closed || u.p.closed.Load() {
		return
	}
	now := time.Now().UnixNano()
	if last := u.lastLog.Load(); now-last >= int64(time.Second) && u.lastLog.CompareAndSwap(last, now) {
		u.p.cfg.logger().Warn("p2pd: queued UDP reply not sent", "addr", u.p.local, "err", err, "dropped", total)
	}
}

// close stops queueing before the socket closes; what is queued gets one
// attempt that does not wait.
func (u *udpBatch) close() {
	u.mu.Lock()
	defer u.p.cfg.dog.forget(u) // after Unlock: the watchdog may be waiting for mu
	defer u.mu.Unlock()
	if u.closed {
		return
	}
	u.closed = true
	u.active.Store(false)
	u.since.Store(0)
	if u.q != nil && u.q.Pending() > 0 {
		u.rc.Control(func(fd uintptr) {
			for u.q.Pending() > 0 {
				if err := u.q.Send(fd); err != nil {
					if err == unix.EAGAIN {
						break
					}
					u.q.Skip()
				}
			}
		})
		u.q.Reset()
	}
}

// recvDropped reads how many datagrams the kernel dropped on socket c
// (SK_MEMINFO_DROPS): a full receive buffer, mostly. 0 for a nil c.
func recvDropped(c *net.UDPConn) uint64 {
	if c == nil {
		return 0
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var mi [unix.SK_MEMINFO_VARS]uint32
	var e syscall.Errno
	rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(mi))
		_, _, e = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
	})
	if e != 0 {
		return 0
	}
	return uint64(mi[unix.SK_MEMINFO_DROPS])
}
