package p2pd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Pipe errors. Test for them with errors.Is: returned errors may wrap them
// with details.
var (
	// ErrPipeClosed is returned by calls on a pipe that has been closed,
	// including Recv and Accept calls pending when it closes.
	ErrPipeClosed = errors.New("p2pd: pipe closed")
	// ErrNoClient is returned by Send on a TCP server pipe when no
	// connected client has the given address.
	ErrNoClient = errors.New("p2pd: no client with that address")
	// ErrIdleTimeout ends a TCP connection idle for PipeConfig.IdleTimeout.
	ErrIdleTimeout = errors.New("p2pd: idle timeout")
	// ErrReadTimeout ends a TCP connection whose message took longer than
	// PipeConfig.ReadTimeout to arrive.
	ErrReadTimeout = errors.New("p2pd: read timeout")
	// ErrFrameTooLarge ends a TCP connection that receives a frame larger
	// than PipeConfig.MaxMsgSize; Send returns it for a message too large
	// to frame.
	ErrFrameTooLarge = errors.New("p2pd: frame too large")
	// ErrBadFrame ends a TCP connection that receives a malformed frame:
	// one cut short by the end of the connection.
	ErrBadFrame = errors.New("p2pd: bad frame")
	// ErrWriteTimeout ends a TCP connection whose peer took none of a
	// message Send was writing for PipeConfig.WriteTimeout; that Send
	// returns an error wrapping it.
	ErrWriteTimeout = errors.New("p2pd: write timeout")
	// ErrEvicted ends a TCP connection that had received nothing for the
	// longest when a new one came to a full server (see PipeConfig.MaxConns).
	ErrEvicted = errors.New("p2pd: evicted for a new connection")
	// ErrOverBudget ends a TCP connection whose partial frame would take
	// the bytes buffered for partial frames over PipeConfig.MaxBuffered.
	ErrOverBudget = errors.New("p2pd: partial frames over budget")
	// ErrAddrInUse is wrapped by a BindError when the address is taken
	// (EADDRINUSE); the system error is wrapped too.
	ErrAddrInUse = errors.New("p2pd: address in use")
)

// BindError reports a server pipe that could not be opened on an address.
type BindError struct {
	Family Family
	Proto  Proto
	Addr   netip.AddrPort // invalid when the route could not be bound
	Err    error
}

func (e *BindError) Error() string {
	a := "route"
	if e.Addr.IsValid() {
		a = e.Addr.String()
	}
	return "p2pd: bind " + e.Proto.String() + " " + a + ": " + trimPrefix(e.Err)
}

func (e *BindError) Unwrap() error { return e.Err }

// inUseError is a system EADDRINUSE error that also matches ErrAddrInUse.
type inUseError struct{ err error }

func (e *inUseError) Error() string   { return e.err.Error() }
func (e *inUseError) Unwrap() []error { return []error{ErrAddrInUse, e.err} }

func newBindError(f Family, proto Proto, addr netip.AddrPort, err error) *BindError {
	inner := err
	var errno syscall.Errno
	if errors.As(err, &errno) {
		inner = errno
	}
	if isAddrInUse(err) {
		inner = &inUseError{inner}
	}
	return &BindError{Family: f, Proto: proto, Addr: addr, Err: inner}
}

// Pipe is one TCP or UDP conversation endpoint: a server (a TCP listener
// or a UDP socket), a connection accepted by a TCP server, or a client.
// Messages arrive through the PipeConfig's MsgCallback, subscriptions and
// linked pipes; they leave through Send. All methods are safe for
// concurrent use.
//
// Every pipe runs exactly one goroutine (the accept loop, the UDP reader or
// the TCP connection reader), which ends when the pipe ends: Close starts
// that and returns, Shutdown and Done wait for it (a server pipe ends after
// its connections).
type Pipe struct {
	cfg    *PipeConfig // shared with the connections of a TCP server
	proto  Proto
	server bool
	parent *Pipe
	route  Route
	local  netip.AddrPort
	remote netip.AddrPort

	ln   net.Listener    // TCP server
	udp  *net.UDPConn    // UDP server or client
	pc   net.PacketConn  // adopted UDP server that is not a *net.UDPConn
	conn net.Conn        // TCP connection, maybe *tls.Conn
	rc   syscall.RawConn // raw reads of a plain TCP connection, or nil
	ub   *udpBatch       // batched UDP I/O, or nil

	cb    atomic.Pointer[cbBox]
	subs  atomic.Pointer[[]*Sub]
	links atomic.Pointer[[]*Pipe]

	closed   atomic.Bool
	draining atomic.Bool
	quit     chan struct{} // closed when the pipe starts closing
	done     chan struct{} // closed when the pipe has ended

	mu       sync.Mutex
	reason   error
	conns    map[*Pipe]struct{}       // TCP server: live connections (made at the first)
	byAddr   map[netip.AddrPort]*Pipe // TCP server: connections by peer
	acceptQ  []*Pipe                  // TCP server: live connections Accept has not taken yet
	acceptW  chan struct{}            // TCP server: closed (and replaced) when acceptQ grows
	dropped  atomic.Uint64            // TCP server: connections Accept never saw
	stats    pipeCounters
	evicting int  // TCP server: evicted connections not ended yet (mu)
	evicted  bool // TCP connection: closed for a newcomer (parent's mu)

	peer     Peer         // TCP: what dispatch gives the callback
	wmu      sync.Mutex   // TCP: one Send writes at a time
	wset     time.Time    // TCP: the write deadline in force (wmu)
	lastRead atomic.Int64 // TCP connection: when it last received (watchClock), for eviction
}

type cbBox struct{ cb MsgCallback }

// newPipe makes a pipe; its goroutine must be started (start), which ends
// it with finish.
func newPipe(cfg *PipeConfig, proto Proto, server bool, parent *Pipe) *Pipe {
	p := &Pipe{cfg: cfg, proto: proto, server: server, parent: parent,
		quit: make(chan struct{}), done: make(chan struct{})}
	if server {
		cfg.group.add(1)
	}
	if parent == nil {
		p.cb.Store(&cbBox{cfg.OnMsg})
	}
	return p
}

func copyConfig(c *PipeConfig) (*PipeConfig, error) {
	var cfg PipeConfig
	if c != nil {
		cfg = *c
	}
	if !cfg.Framing.valid() {
		return nil, fmt.Errorf("p2pd: %w: framing %v", ErrInvalid, cfg.Framing)
	}
	if cfg.dog == nil {
		cfg.dog = new(watcher) // the call's own; a Daemon passes its one
	}
	if cfg.budget == nil {
		cfg.budget = cfg.newBudget()
	}
	return &cfg, nil
}

// Listen opens a server pipe on r.Bound; an unbound route is bound first
// with r.Bind("", 0). Port 0 lets the system choose: see [Pipe.LocalAddr].
// A link-local IPv6 address binds with its zone. For TCP the pipe accepts
// connections, each a pipe of its own; for UDP it receives datagrams from
// anyone. ctx bounds the bind only. Errors are *BindError; one for an
// address in use wraps ErrAddrInUse and the system error.
func Listen(ctx context.Context, proto Proto, r Route, c *PipeConfig) (*Pipe, error) {
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: err}
	}
	return listenShared(ctx, proto, r, cfg)
}

// listenShared is Listen with a config already copied, which the pipe may share
// with others (a Daemon shares one per call).
func listenShared(ctx context.Context, proto Proto, r Route, cfg *PipeConfig) (*Pipe, error) {
	var err error
	if proto != TCP && proto != UDP {
		return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: fmt.Errorf("%w: protocol %v", ErrInvalid, proto)}
	}
	if r.Family != AnyFamily {
		if err := r.checkFamily(); err != nil {
			return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: err}
		}
	}
	if !r.IsBound() {
		b, err := r.Bind("", 0)
		if err != nil {
			return nil, &BindError{Family: r.Family, Proto: proto, Err: err}
		}
		r = b
	}
	fam := FamilyOf(r.Bound.Addr())
	if r.Family != AnyFamily && r.Family != fam {
		return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: fmt.Errorf("%w: %v on an %v route", ErrFamilyUnsupported, r.Bound.Addr(), r.Family)}
	}
	var lc net.ListenConfig
	if cfg.ListenConfig != nil {
		lc = *cfg.ListenConfig
	}
	lc.Control = cfg.control(proto, lc.Control)
	sa, err := resolveZone(r.Bound)
	if err != nil {
		return nil, &BindError{Family: fam, Proto: proto, Addr: r.Bound, Err: err}
	}
	network, addr := proto.network(fam), sa.String()
	var p *Pipe
	if proto == TCP {
		ln, err := lc.Listen(ctx, network, addr)
		if err != nil && cfg.waitForAddr(ctx, r.Bound.Addr(), err) {
			ln, err = lc.Listen(ctx, network, addr)
		}
		if err != nil {
			return nil, cfg.bindError(fam, proto, r.Bound, err)
		}
		p = newPipe(cfg, TCP, true, nil)
		p.ln = ln
	} else {
		pc, err := lc.ListenPacket(ctx, network, addr)
		if err != nil && cfg.waitForAddr(ctx, r.Bound.Addr(), err) {
			pc, err = lc.ListenPacket(ctx, network, addr)
		}
		if err != nil {
			return nil, cfg.bindError(fam, proto, r.Bound, err)
		}
		p = newPipe(cfg, UDP, true, nil)
		p.setPacketConn(pc)
	}
	p.local = netip.AddrPortFrom(r.Bound.Addr(), p.localFromSocket().Port())
	r.Bound = p.local
	p.route = r
	if p.udp != nil {
		p.initBatchBound(fam, sa)
	}
	p.start()
	return p, nil
}

// ServeListener serves an already bound TCP listener (systemd socket
// activation, tableflip, a socket made with other options) as a server
// pipe. The pipe owns l: Close closes it.
func ServeListener(l net.Listener, c *PipeConfig) (*Pipe, error) {
	if l == nil {
		return nil, fmt.Errorf("p2pd: ServeListener: %w: nil listener", ErrInvalid)
	}
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, err
	}
	p := newPipe(cfg, TCP, true, nil)
	p.ln = l
	p.local = p.localFromSocket()
	p.route = Route{Family: FamilyOf(p.local.Addr()), Bound: p.local}
	p.start()
	return p, nil
}

// ServePacketConn serves an already bound UDP socket as a server pipe. A
// *net.UDPConn takes the allocation-free path. The pipe owns pc: Close
// closes it.
func ServePacketConn(pc net.PacketConn, c *PipeConfig) (*Pipe, error) {
	if pc == nil {
		return nil, fmt.Errorf("p2pd: ServePacketConn: %w: nil PacketConn", ErrInvalid)
	}
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, err
	}
	p := newPipe(cfg, UDP, true, nil)
	p.setPacketConn(pc)
	p.local = p.localFromSocket()
	p.route = Route{Family: FamilyOf(p.local.Addr()), Bound: p.local}
	p.start()
	return p, nil
}

func (p *Pipe) setPacketConn(pc net.PacketConn) {
	if u, ok := pc.(*net.UDPConn); ok {
		p.udp = u
	} else {
		p.pc = pc
	}
}

func (p *Pipe) localFromSocket() netip.AddrPort {
	switch {
	case p.ln != nil:
		return addrPortOf(p.ln.Addr())
	case p.udp != nil:
		return addrPortOf(p.udp.LocalAddr())
	case p.pc != nil:
		return addrPortOf(p.pc.LocalAddr())
	case p.conn != nil:
		return addrPortOf(p.conn.LocalAddr())
	}
	return netip.AddrPort{}
}

// Dial opens a client pipe to host and port through route r. The local
// address is r.Bound if r is bound, else r.Addr() with port 0; a zero
// Route lets the system choose. host is an IP literal (a link-local IPv6
// one with its zone, "fe80::1%eth0") or a name resolved in r's family
// (both families for a zero Route). ctx and PipeConfig.ConnectTimeout
// bound resolving, connecting and the TLS handshake.
func Dial(ctx context.Context, proto Proto, r Route, host string, port uint16, c *PipeConfig) (*Pipe, error) {
	hostport := net.JoinHostPort(host, strconv.Itoa(int(port)))
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, err
	}
	if proto != TCP && proto != UDP {
		return nil, fmt.Errorf("p2pd: dial %v %s: %w: protocol", proto, hostport, ErrInvalid)
	}
	fam := r.Family
	var laddr netip.AddrPort
	if r.IsBound() {
		laddr = r.Bound
	} else if a := r.Addr(); a.IsValid() {
		laddr = netip.AddrPortFrom(a, 0)
	}
	if fam == AnyFamily && laddr.IsValid() {
		fam = FamilyOf(laddr.Addr())
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if fam == IPv4 {
			ip = ip.Unmap()
		}
		if fam != AnyFamily && FamilyOf(ip) != fam {
			return nil, fmt.Errorf("p2pd: dial %v %s: %w: %v route", proto, hostport, ErrFamilyUnsupported, fam)
		}
		fam = FamilyOf(ip)
	}
	network := "tcp"
	if proto == UDP {
		network = "udp"
	}
	if fam != AnyFamily {
		network = proto.network(fam)
	}
	var d net.Dialer
	if cfg.Dialer != nil {
		d = *cfg.Dialer
	}
	d.LocalAddr = nil
	if laddr.IsValid() {
		sa, err := resolveZone(laddr)
		if err != nil {
			return nil, fmt.Errorf("p2pd: dial %v %s from %v: %w", proto, hostport, laddr, err)
		}
		if proto == TCP {
			d.LocalAddr = net.TCPAddrFromAddrPort(sa)
		} else {
			d.LocalAddr = net.UDPAddrFromAddrPort(sa)
		}
	}
	dialAddr := hostport
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() != "" {
		sa, err := resolveZone(netip.AddrPortFrom(ip, port))
		if err != nil {
			return nil, fmt.Errorf("p2pd: dial %v %s: %w", proto, hostport, err)
		}
		dialAddr = sa.String()
	}
	if d.ControlContext != nil {
		user := d.ControlContext
		if ctl := cfg.control(proto, nil); ctl != nil {
			d.ControlContext = func(ctx context.Context, network, address string, rc syscall.RawConn) error {
				if err := ctl(network, address, rc); err != nil {
					return err
				}
				return user(ctx, network, address, rc)
			}
		}
	} else {
		d.Control = cfg.control(proto, d.Control)
	}
	if t := cfg.connectTimeout(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	conn, err := d.DialContext(ctx, network, dialAddr)
	if err != nil {
		if isAddrInUse(err) {
			return nil, newBindError(fam, proto, laddr, err)
		}
		return nil, fmt.Errorf("p2pd: dial %v %s: %w", proto, hostport, err)
	}
	p := newPipe(cfg, proto, false, nil)
	if proto == UDP {
		p.udp = conn.(*net.UDPConn)
	} else {
		cfg.setLinger(conn)
		if cfg.TLS != nil {
			tc := cfg.TLS.Clone()
			if tc.ServerName == "" {
				tc.ServerName = host
				if ip, err := netip.ParseAddr(host); err == nil {
					tc.ServerName = ip.WithZone("").String()
				}
			}
			tconn := tls.Client(conn, tc)
			if err := tconn.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, fmt.Errorf("p2pd: dial %v %s: TLS handshake: %w", proto, hostport, err)
			}
			conn = tconn
		} else if haveRawRead {
			if tcp, ok := conn.(*net.TCPConn); ok {
				p.rc, _ = tcp.SyscallConn()
			}
		}
		p.conn = conn
	}
	p.local = addrPortOf(conn.LocalAddr())
	p.remote = addrPortOf(conn.RemoteAddr())
	if r.Family == AnyFamily && len(r.NIC) == 0 {
		r = Route{Family: FamilyOf(p.local.Addr())}
	}
	if laddr.IsValid() && laddr.Addr().Zone() != "" {
		p.local = netip.AddrPortFrom(laddr.Addr(), p.local.Port())
	}
	r.Bound = p.local
	p.route = r
	p.start()
	return p, nil
}

func (c *PipeConfig) setLinger(conn net.Conn) {
	if secs, ok := c.lingerSecs(); ok {
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(secs)
		}
	}
}

// control returns the Control function setting p2pd's socket options
// before user's; nil when there is nothing to do.
func (c *PipeConfig) control(proto Proto, user func(network, address string, rc syscall.RawConn) error) func(network, address string, rc syscall.RawConn) error {
	reuse, bcast := proto == UDP && c.ReuseAddr, proto == UDP && c.Broadcast
	if !reuse && !bcast && !c.FreeBind {
		return user
	}
	return func(network, address string, rc syscall.RawConn) error {
		if reuse || bcast {
			if err := setSockopts(rc, reuse, bcast); err != nil {
				return err
			}
		}
		if c.FreeBind {
			if err := setFreeBind(rc, strings.HasSuffix(network, "6")); err != nil {
				return err
			}
		}
		if user != nil {
			return user(network, address, rc)
		}
		return nil
	}
}

// resolveZone replaces an interface name used as zone by the interface's
// current index, read from the kernel on the calling thread (so in its
// network namespace). The net package would use a process-wide name cache,
// stale once an interface is recreated under the same name or when threads
// sit in other namespaces.
func resolveZone(ap netip.AddrPort) (netip.AddrPort, error) {
	z := ap.Addr().Zone()
	if z == "" {
		return ap, nil
	}
	if _, err := strconv.Atoi(z); err == nil {
		return ap, nil
	}
	ifc, err := net.InterfaceByName(z)
	if err != nil {
		return ap, &InterfaceError{Op: "lookup", Name: z, Err: fmt.Errorf("%w: %v", ErrNoInterface, err)}
	}
	return netip.AddrPortFrom(ap.Addr().WithZone(strconv.Itoa(ifc.Index)), ap.Port()), nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return ap
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return unmap(ap)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

// start runs the pipe's goroutine.
func (p *Pipe) start() {
	if !p.server {
		p.peer = Peer{AddrPort: p.remote, Local: p.local}
	}
	switch {
	case p.ln != nil:
		go p.acceptLoop()
	case p.proto == UDP:
		if p.udp != nil && p.ub == nil {
			p.initBatch()
		}
		go p.udpLoop()
	default:
		go p.connLoop()
	}
}

// Send sends msg. On a UDP server pipe it goes to any address to; on a
// TCP server pipe, to the connected client whose address is to (an error
// wrapping ErrNoClient if there is none; a zone-less address matches a
// zoned client); on a client pipe or a connection's pipe, to the peer (to
// may be the zero AddrPort, or the peer's address). On framed TCP, Send
// adds the framing. Send is safe for concurrent use: each message is
// written whole. On a closed pipe it returns ErrPipeClosed.
func (p *Pipe) Send(msg []byte, to Peer) error {
	if p.closed.Load() {
		return ErrPipeClosed
	}
	var err error
	switch {
	case p.proto == UDP && p.server:
		if !to.IsValid() {
			return fmt.Errorf("p2pd: send: %w: UDP server pipe needs a destination", ErrInvalid)
		}
		err = p.sendTo(msg, to)
	case p.proto == UDP:
		if to.IsValid() && !sameAddr(to.AddrPort, p.remote) {
			return fmt.Errorf("p2pd: send to %v: %w: a client pipe only sends to its peer %v", to.AddrPort, ErrInvalid, p.remote)
		}
		_, err = p.udp.Write(msg)
	case p.server:
		c := p.client(to.AddrPort)
		if c == nil {
			return fmt.Errorf("%w: %v", ErrNoClient, to.AddrPort)
		}
		return c.Send(msg, Peer{})
	default:
		if to.IsValid() && !sameAddr(to.AddrPort, p.remote) {
			return fmt.Errorf("p2pd: send to %v: %w: a TCP pipe only sends to its peer %v", to.AddrPort, ErrInvalid, p.remote)
		}
		return p.write(msg)
	}
	if err != nil {
		if p.closed.Load() {
			return ErrPipeClosed
		}
		return sendError(to.AddrPort, err)
	}
	return nil
}

// sendError wraps a system error of a Send with the destination.
func sendError(to netip.AddrPort, err error) error {
	return &opError{op: "send to " + to.String(), err: err}
}

func sameAddr(a, b netip.AddrPort) bool {
	a, b = unmap(a), unmap(b)
	if a == b {
		return true
	}
	return a.Port() == b.Port() && (a.Addr().Zone() == "" || b.Addr().Zone() == "") &&
		a.Addr().WithZone("") == b.Addr().WithZone("")
}

// write sends one message on a TCP connection, framed, within
// WriteTimeout; a peer that does not take it in time loses the connection.
func (p *Pipe) write(msg []byte) error {
	f := p.cfg.Framing
	if f == FrameRaw {
		return p.writeAll(msg)
	}
	bp := writeBufs.Get().(*[]byte)
	b, err := appendFrame((*bp)[:0], f, msg, p.cfg.maxMsgSize())
	if err == nil {
		err = p.writeAll(b)
	}
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		writeBufs.Put(bp)
	}
	return err
}

// writeAll writes b whole, one Send at a time, and fails with
// ErrWriteTimeout once the peer has taken nothing for WriteTimeout. The
// write deadline is moved only when less than three quarters of
// WriteTimeout is left (a deadline change is a timer update); a write that
// meets a deadline set early for that reason, or that made progress, goes
// on with a new one. A TLS connection cannot go on after a timeout, so it
// is written in pieces of tlsPiece bytes, each with its own deadline.
func (p *Pipe) writeAll(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	wt := p.cfg.writeTimeout()
	if wt <= 0 {
		if _, err := p.conn.Write(b); err != nil {
			return p.writeError(err)
		}
		return nil
	}
	if _, isTLS := p.conn.(*tls.Conn); isTLS {
		for len(b) > 0 {
			n := min(len(b), tlsPiece)
			p.conn.SetWriteDeadline(time.Now().Add(wt))
			if _, err := p.conn.Write(b[:n]); err != nil {
				return p.writeError(err)
			}
			b = b[n:]
		}
		return nil
	}
	last := time.Now() // when the peer last took something
	if p.wset.Sub(last) < wt*3/4 {
		p.wset = last.Add(wt)
		p.conn.SetWriteDeadline(p.wset)
	}
	for {
		n, err := p.conn.Write(b)
		if err == nil {
			return nil
		}
		b = b[n:]
		if now := time.Now(); isTimeout(err) && (n > 0 || now.Sub(last) < wt) {
			if n > 0 {
				last = now
			}
			p.wset = last.Add(wt)
			p.conn.SetWriteDeadline(p.wset)
			continue
		}
		return p.writeError(err)
	}
}

// tlsPiece is how much of a message a TLS connection writes under one
// deadline.
const tlsPiece = 64 << 10

// writeError is the error of a failed write; a timeout ends the
// connection, counted.
func (p *Pipe) writeError(err error) error {
	if p.closed.Load() {
		return ErrPipeClosed
	}
	if !isTimeout(err) {
		return sendError(p.remote, err)
	}
	err = fmt.Errorf("%w: the peer took nothing for %v", ErrWriteTimeout, p.cfg.writeTimeout())
	p.stats.writeTimeouts.Add(1)
	if par := p.parent; par != nil {
		par.stats.writeTimeouts.Add(1)
	}
	p.terminate(err)
	return sendError(p.remote, err)
}

// client finds a TCP server's connection by peer address.
func (p *Pipe) client(to netip.AddrPort) *Pipe {
	to = unmap(to)
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.byAddr[to]; c != nil {
		return c
	}
	if to.Addr().Zone() == "" {
		for a, c := range p.byAddr {
			if sameAddr(a, to) {
				return c
			}
		}
	}
	return nil
}

// Accept waits for the next connection of a TCP server pipe and returns
// its pipe (P2PD's "await pipe"). Live connections are queued for it, up
// to PipeConfig.QueueSize; beyond that they are served but not queued
// (counted in [PipeStats].NotQueued). A connection that ends while queued
// leaves the queue, so a server whose owner never calls Accept holds
// nothing for it. The returned pipe may end at any time (see [Pipe.Done]).
func (p *Pipe) Accept(ctx context.Context) (*Pipe, error) {
	if p.ln == nil {
		return nil, fmt.Errorf("p2pd: accept: %w: not a TCP server pipe", ErrInvalid)
	}
	if ctx == nil {
		return nil, fmt.Errorf("p2pd: accept: %w: nil context", ErrInvalid)
	}
	for {
		p.mu.Lock()
		if len(p.acceptQ) > 0 {
			c := p.acceptQ[0]
			p.acceptQ[0] = nil
			p.acceptQ = p.acceptQ[1:]
			if len(p.acceptQ) == 0 {
				p.acceptQ = nil
			}
			p.mu.Unlock()
			return c, nil
		}
		if p.closed.Load() {
			p.mu.Unlock()
			return nil, ErrPipeClosed
		}
		if p.acceptW == nil {
			p.acceptW = make(chan struct{})
		}
		w := p.acceptW
		p.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.quit:
			return nil, ErrPipeClosed
		}
	}
}

// enqueue offers c, a connection up and running, to Accept.
func (p *Pipe) enqueue(c *Pipe) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.acceptQ) >= p.cfg.queueSize() {
		p.dropped.Add(1)
		return
	}
	p.acceptQ = append(p.acceptQ, c)
	if p.acceptW != nil {
		close(p.acceptW)
		p.acceptW = nil
	}
}

// dequeueLocked removes c from the accept queue, if it is there; p.mu is
// held.
func (p *Pipe) dequeueLocked(c *Pipe) {
	if i := slices.Index(p.acceptQ, c); i >= 0 {
		p.acceptQ = slices.Delete(p.acceptQ, i, i+1)
		if len(p.acceptQ) == 0 {
			p.acceptQ = nil
		}
	}
}

// Clients returns the pipes of a TCP server's live connections.
func (p *Pipe) Clients() []*Pipe {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := make([]*Pipe, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	return cs
}

// SetOnMsg replaces the pipe's MsgCallback (OnMsg) atomically; messages already
// being delivered finish with the old one. On a TCP server it applies to
// its connections too, unless one was given its own with SetOnMsg. nil
// removes the callback.
func (p *Pipe) SetOnMsg(cb MsgCallback) { p.cb.Store(&cbBox{cb}) }

func (p *Pipe) handler() MsgCallback {
	if b := p.cb.Load(); b != nil {
		return b.cb
	}
	if p.parent != nil {
		if b := p.parent.cb.Load(); b != nil {
			return b.cb
		}
	}
	return nil
}

// LocalAddr returns the pipe's local address, with the real port.
func (p *Pipe) LocalAddr() netip.AddrPort { return p.local }

// RemoteAddr returns the peer of a client or connection pipe; the zero
// AddrPort for a server pipe.
func (p *Pipe) RemoteAddr() netip.AddrPort { return p.remote }

// Proto returns TCP or UDP.
func (p *Pipe) Proto() Proto { return p.proto }

// Family returns IPv4 or IPv6.
func (p *Pipe) Family() Family {
	if p.route.Family != AnyFamily {
		return p.route.Family
	}
	return FamilyOf(p.local.Addr())
}

// Route returns the route the pipe was opened on, bound to the pipe's
// local address and real port.
func (p *Pipe) Route() Route { return p.route }

// IsServer reports whether p is a server pipe (TCP listener or UDP socket
// opened by Listen or Serve*).
func (p *Pipe) IsServer() bool { return p.server }

// Parent returns the TCP server pipe that accepted p, or nil.
func (p *Pipe) Parent() *Pipe { return p.parent }

// Done returns a channel closed when the pipe has ended: its socket is
// closed, its goroutine finished, OnEnd called.
func (p *Pipe) Done() <-chan struct{} { return p.done }

// Err returns why the pipe ended: nil while it runs and after a local
// Close or Shutdown, otherwise the reason given to OnEnd.
func (p *Pipe) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// Close ends the pipe at once, as net/http's Server.Close does: it closes
// the socket (and, on a TCP server, every connection's), and makes pending
// Recv and Accept calls return ErrPipeClosed. It does not wait for the
// pipe's goroutine or for callbacks still running, so it may be called
// from anywhere, a callback of the pipe included; the pipe has ended when
// [Pipe.Done] is closed (after its running callbacks returned and OnEnd
// ran). Close is idempotent and always returns nil.
func (p *Pipe) Close() error {
	p.closeNoWait()
	return nil
}

// closeNoWait closes the pipe and, on a TCP server, its connections.
func (p *Pipe) closeNoWait() {
	p.terminate(nil)
	if p.ln != nil {
		for _, c := range p.Clients() {
			c.terminate(nil)
		}
	}
}

// Shutdown ends the pipe gracefully: it stops accepting connections and
// reading new messages, lets running callbacks finish, then closes, and
// returns nil once the pipe has ended. If ctx ends first it closes at once
// (as Close) and returns ctx.Err().
//
// Shutdown waits for callbacks, so do not call it from a callback of the
// pipe (or, for a TCP server, of its connections) with a context that
// never ends: it cannot finish before that callback returns. Close is the
// call for a callback.
func (p *Pipe) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return fmt.Errorf("p2pd: shutdown: %w: nil context", ErrInvalid)
	}
	p.drain()
	select {
	case <-p.done:
		p.closeNoWait()
		return nil
	case <-ctx.Done():
		p.closeNoWait()
		return ctx.Err()
	}
}

var aLongTimeAgo = time.Unix(1, 0)

func (p *Pipe) drain() {
	p.draining.Store(true)
	switch {
	case p.ln != nil:
		p.ln.Close()
		for _, c := range p.Clients() {
			c.drain()
		}
	case p.udp != nil:
		p.udp.SetReadDeadline(aLongTimeAgo)
	case p.pc != nil:
		p.pc.SetReadDeadline(aLongTimeAgo)
	case p.conn != nil:
		p.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// terminate starts closing: the first call records reason and closes the
// socket. It does not wait.
func (p *Pipe) terminate(reason error) {
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		return
	}
	p.closed.Store(true)
	p.reason = reason
	close(p.quit)
	p.mu.Unlock()
	if p.ub != nil {
		p.ub.close()
	}
	switch {
	case p.ln != nil:
		p.ln.Close()
	case p.udp != nil:
		p.udp.Close()
	case p.pc != nil:
		p.pc.Close()
	case p.conn != nil:
		p.conn.Close()
	}
}

// finish is the last thing the pipe's goroutine does. A connection leaves
// its server after OnEnd, so that the server, which waits for its
// connections, ends after their OnEnd too.
func (p *Pipe) finish() {
	p.mu.Lock()
	reason := p.reason
	p.mu.Unlock()
	if f := p.cfg.OnEnd; f != nil {
		p.safely("OnEnd", func() { f(p, reason) })
	}
	if par := p.parent; par != nil {
		p.cfg.limit.give()
		par.mu.Lock()
		delete(par.conns, p)
		if par.byAddr[p.remote] == p {
			delete(par.byAddr, p.remote)
		}
		par.dequeueLocked(p)
		if p.evicted {
			par.evicting--
		}
		par.mu.Unlock()
	}
	if f := p.cfg.ended; f != nil && p.server {
		f(p)
	}
	close(p.done)
	if p.server {
		p.cfg.group.done()
	}
}

func (p *Pipe) safely(what string, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			p.logPanic(what, r)
		}
	}()
	fn()
}

func (p *Pipe) logPanic(what string, r any) {
	p.stats.panics.Add(1)
	if par := p.parent; par != nil {
		par.stats.panics.Add(1)
	}
	buf := make([]byte, 8<<10)
	buf = buf[:runtime.Stack(buf, false)]
	p.cfg.logger().Error("p2pd: panic in "+what+" (recovered)", "local", p.local, "remote", p.remote, "panic", r, "stack", string(buf))
}

// up calls OnUp.
func (p *Pipe) up() {
	if f := p.cfg.OnUp; f != nil {
		p.safely("OnUp", func() { f(p) })
	}
}

// acceptLoop is a TCP server's goroutine. Its cold paths are functions of
// their own, so that the goroutine of an idle listener, parked in Accept,
// fits in the smallest stack.
func (p *Pipe) acceptLoop() {
	var reason error
	var delay time.Duration
	for {
		c, err := p.ln.Accept()
		if err == nil {
			delay = 0
			p.addConn(c)
			continue
		}
		var end bool
		if end, reason = p.acceptError(err, &delay); end {
			break
		}
	}
	p.endServer(reason)
}

// acceptError decides what an accept error means: end the server (with
// reason, nil for a local close), or accept again, after a backoff for
// errors worth retrying.
//
//go:noinline
func (p *Pipe) acceptError(err error, delay *time.Duration) (end bool, reason error) {
	if p.closed.Load() || p.draining.Load() {
		return true, nil
	}
	if isTemporary(err) {
		*delay = backoff(*delay)
		p.stats.acceptErrors.Add(1)
		p.cfg.logger().Warn("p2pd: accept error, retrying", "addr", p.local, "err", err, "delay", *delay)
		return !p.sleep(*delay), nil
	}
	return true, err
}

// endServer ends a TCP server once it accepts no more: it waits for the
// connections, which end on their own when draining, or because the
// server closed them.
//
//go:noinline
func (p *Pipe) endServer(reason error) {
	if reason != nil {
		p.terminate(reason)
		for _, c := range p.Clients() {
			c.terminate(nil)
		}
	}
	if !p.draining.Load() {
		p.terminate(nil)
	}
	for {
		p.mu.Lock()
		var c *Pipe
		for c = range p.conns {
			break
		}
		p.mu.Unlock()
		if c == nil {
			break
		}
		<-c.done
	}
	p.terminate(nil)
	p.finish()
}

//go:noinline
func (p *Pipe) addConn(conn net.Conn) {
	c := newPipe(p.cfg, TCP, false, p)
	c.local = addrPortOf(conn.LocalAddr())
	if z := p.local.Addr().Zone(); z != "" && c.local.Addr().Zone() == "" {
		c.local = netip.AddrPortFrom(c.local.Addr().WithZone(z), c.local.Port())
	}
	c.remote = addrPortOf(conn.RemoteAddr())
	c.route = p.route
	c.route.Bound = c.local
	p.cfg.setLinger(conn)
	if p.cfg.TLS != nil {
		conn = tls.Server(conn, p.cfg.TLS)
	} else if tc, ok := conn.(*net.TCPConn); ok && haveRawRead {
		c.rc, _ = tc.SyscallConn()
	}
	c.conn = conn
	c.lastRead.Store(monoNow())
	p.mu.Lock()
	if p.closed.Load() || p.draining.Load() {
		p.mu.Unlock()
		conn.Close()
		return
	}
	full := false
	if max := p.cfg.maxConns(); max > 0 && len(p.conns)-p.evicting >= max {
		full = true
	} else if !p.cfg.limit.take() {
		full = true
	}
	var victim *Pipe
	if full {
		if victim = p.evictLocked(); victim == nil {
			p.mu.Unlock()
			p.reject(conn)
			return
		}
		p.cfg.limit.force() // the evicted connection gives its slot back when it ends
	}
	p.stats.accepted.Add(1)
	if p.conns == nil {
		p.conns = make(map[*Pipe]struct{})
		p.byAddr = make(map[netip.AddrPort]*Pipe)
	}
	p.conns[c] = struct{}{}
	p.byAddr[c.remote] = c
	p.mu.Unlock()
	if victim != nil {
		victim.terminate(fmt.Errorf("%w: silent for %v while the server was full", ErrEvicted, time.Duration(monoNow()-victim.lastRead.Load()).Round(time.Millisecond)))
	}
	c.start()
}

// evictAfter is how long a connection must have received nothing before a
// newcomer may take its slot.
const evictAfter = time.Second

// evictScan bounds the connections evictLocked looks at: a sample, so
// that a flood of newcomers costs little per connection.
const evictScan = 64

// evictLocked makes room for a newcomer under slot pressure: it closes,
// among up to evictScan of the server's connections, the one that has
// received nothing for the longest, if that is at least evictAfter, and
// returns it for the caller to close (with reason ErrEvicted) once p.mu,
// held now, is released; nil if there is none.
//
// A peer that holds a slot while sending (next to) nothing, such as a
// FrameRaw connection trickling one byte per idle period, or a TLS peer
// silent in its handshake, thus loses it to a peer that comes; a peer that
// talks keeps it.
func (p *Pipe) evictLocked() *Pipe {
	var victim *Pipe
	oldest := monoNow() - int64(evictAfter)
	n := 0
	for c := range p.conns {
		if n++; n > evictScan {
			break
		}
		if c.closed.Load() {
			continue
		}
		if t := c.lastRead.Load(); t <= oldest {
			victim, oldest = c, t
		}
	}
	if victim == nil {
		return nil
	}
	victim.evicted = true
	p.evicting++
	if e := p.stats.evicted.Add(1); e&(e-1) == 0 {
		p.cfg.logger().Warn("p2pd: connection limit reached, closing the longest silent connections", "addr", p.local, "evicted", e)
	}
	return victim
}

// monoNow is a monotonic clock in nanoseconds.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

var monoEpoch = time.Now()

// reject closes a connection over a limit at once (with a reset, so the
// peer learns it now and no TIME_WAIT is left), counts and logs it.
func (p *Pipe) reject(conn net.Conn) {
	n := p.stats.rejected.Add(1) // before the close, which the peer sees
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
	if n&(n-1) == 0 { // 1, 2, 4, 8...: a flood does not flood the log
		p.cfg.logger().Warn("p2pd: connection limit reached, closing new connections", "addr", p.local, "rejected", n)
	}
}

// backoff returns the next accept retry delay: 5 ms doubling to 1 s.
func backoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	return min(2*d, time.Second)
}

// sleep waits d unless the pipe closes first (then it returns false).
func (p *Pipe) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !p.draining.Load()
	case <-p.quit:
		return false
	}
}

// isTemporary reports errors worth retrying: out of descriptors or
// buffers, aborted connections, timeouts.
func isTemporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM, syscall.EINTR, syscall.EAGAIN, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return true
		}
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connLoop is the goroutine of a TCP connection or client pipe.
func (p *Pipe) connLoop() {
	err := p.handshake()
	if err == nil {
		if p.parent != nil {
			p.parent.enqueue(p)
		}
		p.up()
		err = p.readLoop()
	}
	if p.draining.Load() {
		err = nil
	}
	p.terminate(err)
	p.finish()
}

// handshake runs the server side of TLS, bounded by ConnectTimeout and by
// IdleTimeout (a peer silent in its handshake is idle), whichever is
// shorter.
func (p *Pipe) handshake() error {
	tc, ok := p.conn.(*tls.Conn)
	if !ok || p.parent == nil {
		return nil
	}
	ctx := context.Background()
	t := p.cfg.connectTimeout()
	if idle := p.cfg.idleTimeout(true); idle > 0 && (t <= 0 || idle < t) {
		t = idle
	}
	if t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("p2pd: TLS handshake with %v: %w", p.remote, err)
	}
	return nil
}

// readLoop reads and dispatches the messages of a TCP connection.
//
// Deadlines: a framed message being read must complete within ReadTimeout
// of its first byte; otherwise the connection must not stay silent for
// IdleTimeout. The idle deadline is moved only when a quarter of it has
// gone by, not at every read (a deadline change is a timer update), and a
// deadline that fires early for that reason is moved on, not obeyed.
func (p *Pipe) readLoop() error {
	cfg := p.cfg
	cr := newConnReader(cfg.Framing, cfg.maxMsgSize(), cfg.bufferSize(TCP), p.deliverTCP)
	cr.stopped = p.closed.Load
	cr.budget = cfg.budget
	if p.rc != nil {
		cr.rc = p.rc
	} else {
		cr.src = p.conn
	}
	defer cr.release()
	idle, rt := cfg.idleTimeout(p.parent != nil), cfg.readTimeout()
	if cfg.Framing == FrameRaw {
		rt = 0
	}
	var frameStart, last, set time.Time // set: the deadline in force
	for {
		if idle > 0 || rt > 0 {
			now := time.Now()
			last = now
			dl := set
			switch {
			case cr.pending() && rt > 0:
				if frameStart.IsZero() {
					frameStart = now
					dl = now.Add(rt)
				}
			case idle > 0:
				frameStart = time.Time{}
				if set.Sub(now) < idle*3/4 {
					dl = now.Add(idle)
				}
			default:
				frameStart, dl = time.Time{}, time.Time{}
			}
			if !dl.Equal(set) {
				p.conn.SetReadDeadline(dl)
				set = dl
			}
		}
		if p.closed.Load() || p.draining.Load() {
			return nil
		}
		err := cr.fill()
		p.lastRead.Store(monoNow())
		if err == nil {
			continue
		}
		switch {
		case p.closed.Load() || p.draining.Load():
			return nil
		case isTimeout(err) && cr.pending() && rt > 0:
			return fmt.Errorf("%w: %d bytes of a frame in %v", ErrReadTimeout, cr.w-cr.r, rt)
		case isTimeout(err) && idle > 0:
			if quiet := time.Since(last); quiet < idle {
				// Set a quarter early: wait for the rest.
				set = last.Add(idle)
				p.conn.SetReadDeadline(set)
				continue
			}
			return fmt.Errorf("%w: nothing received for %v", ErrIdleTimeout, idle)
		case errors.Is(err, io.EOF):
			return io.EOF
		case errors.Is(err, ErrOverBudget):
			p.countOverBudget()
		}
		return err
	}
}

func (p *Pipe) deliverTCP(msg []byte) { p.dispatch(msg, p.peer) }

// dispatch hands one received message to subscriptions, linked pipes and
// the callback. It allocates nothing unless a subscription matches.
func (p *Pipe) dispatch(msg []byte, from Peer) {
	if s := p.subs.Load(); s != nil {
		deliverSubs(*s, msg, from, p)
	}
	par := p.parent
	if par != nil {
		if s := par.subs.Load(); s != nil {
			deliverSubs(*s, msg, from, p)
		}
	}
	if l := p.links.Load(); l != nil {
		p.forward(*l, msg)
	}
	if par != nil {
		if l := par.links.Load(); l != nil {
			p.forward(*l, msg)
		}
	}
	if cb := p.handler(); cb != nil {
		p.callCB(cb, msg, from)
	} else if p.subs.Load() == nil && p.links.Load() == nil && (par == nil || par.subs.Load() == nil && par.links.Load() == nil) {
		p.unhandled(from.AddrPort)
	}
}

func (p *Pipe) callCB(cb MsgCallback, msg []byte, from Peer) {
	defer func() {
		if r := recover(); r != nil {
			p.logPanic("MsgCB", r)
		}
	}()
	cb.MsgCB(msg, from, p)
}

// unhandled counts a message that nothing took (no callback, subscription
// or link) and says so in the log the first time, per server.
//
//go:noinline
func (p *Pipe) unhandled(from netip.AddrPort) {
	top := p
	if p.parent != nil {
		top = p.parent
	}
	if top.stats.unhandled.Add(1) == 1 {
		p.cfg.logger().Warn("p2pd: message dropped: the pipe has no MsgCB, subscription or link (counted in PipeStats.Unhandled)", "local", p.local, "from", from)
	}
}
