package p2pd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The Pipe type and what its roles share: construction, accessors, Send,
// the lifecycle (Close, Shutdown, drain, terminate, finish) and the
// dispatch of received messages. The roles live beside it: listen.go
// (server pipes), dial.go (client pipes), tcp_server.go (a TCP server's
// accept loop and limits), tcp_conn.go (a TCP connection's reads and
// writes), udp.go and udp_linux.go (UDP).

// Pipe is one TCP or UDP conversation endpoint: a server (a TCP listener
// or a UDP socket), a connection accepted by a TCP server, or a client.
// Messages arrive through the PipeConfig's MsgCallback, subscriptions and
// linked pipes; they leave through Send. All methods are safe for
// concurrent use.
//
// Every pipe runs one goroutine (the accept loop, the UDP reader or the TCP
// connection reader), or one per socket for a server pipe of several
// (PipeConfig.Sockets), which ends when the pipe ends: Close starts that
// and returns, Shutdown and Done wait for it (a server pipe ends after its
// connections). On Linux a pipe with nothing to read parks: it gives up its
// goroutine and waits in an epoll set of its owner (a Daemon, or the
// Listen call) until it has data, ends or times out, then gets a new one.
// A TCP listener or a UDP server socket of one socket parks when nothing
// has come since it began or for 2 s; so does an accepted plain (not TLS)
// TCP connection. Callbacks still run one at a time, in order.
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
	rc   syscall.RawConn // raw reads of a plain TCP connection, or a TCP listener's socket to park; or nil
	ub   *udpBatch       // batched UDP I/O, or nil
	fan  *fanout         // a server's other sockets (PipeConfig.Sockets), or nil

	cb    atomic.Pointer[cbBox]
	subs  atomic.Pointer[[]*Sub]
	links atomic.Pointer[[]*Pipe]
	taps  atomic.Pointer[[]*tap] // see Intercept

	closed   atomic.Bool
	draining atomic.Bool
	quit     signal // fired when the pipe starts closing
	done     signal // fired when the pipe has ended

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

	wmu      sync.Mutex   // TCP: one Send writes at a time
	wset     int64        // TCP: the write deadline in force (monoNow; 0: none; wmu)
	lastRead atomic.Int64 // TCP connection: when it last received (monoNow), for eviction
	cr       *connReader  // TCP: the reader, made by its first goroutine
	parkID   uint64       // its key in the parker, 0 before it first parks (parker's mu)
}

type cbBox struct{ cb MsgCallback }

// signal is a channel that is made only when something waits on it: most
// pipes end with nobody selecting on their quit or done, and a channel is
// 96 bytes. fire must be called once.
type signal struct{ ch atomic.Pointer[chan struct{}] }

// fired stands for the channel of a signal fired before anything waited.
var fired = func() *chan struct{} { c := make(chan struct{}); close(c); return &c }()

// wait returns a channel that is closed when the signal fires.
func (s *signal) wait() <-chan struct{} {
	if c := s.ch.Load(); c != nil {
		return *c
	}
	c := make(chan struct{})
	if s.ch.CompareAndSwap(nil, &c) {
		return c
	}
	return *s.ch.Load()
}

func (s *signal) fire() {
	if !s.ch.CompareAndSwap(nil, fired) {
		close(*s.ch.Load())
	}
}

// newPipe makes a pipe; its goroutine must be started (start), which ends
// it with finish.
func newPipe(cfg *PipeConfig, proto Proto, server bool, parent *Pipe) *Pipe {
	p := &Pipe{cfg: cfg, proto: proto, server: server, parent: parent}
	if server {
		cfg.group.add(1)
		cfg.park.hold()
	}
	if parent == nil {
		p.cb.Store(&cbBox{cfg.OnMsg})
	}
	return p
}

// copyConfig copies c (nil: the zero config) for the pipes of one call,
// checks it, and gives it what those pipes share: a watchdog of blocked UDP
// batches and the budget of partial frames.
func copyConfig(c *PipeConfig) (*PipeConfig, error) {
	var cfg PipeConfig
	if c != nil {
		cfg = *c
	}
	if !cfg.Framing.valid() {
		return nil, errorf("p2pd: %w: framing %v", ErrInvalid, cfg.Framing)
	}
	if err := cfg.checkSockets(); err != nil {
		return nil, err
	}
	if cfg.dog == nil {
		cfg.dog = new(watcher) // the call's own; a Daemon passes its one
	}
	if cfg.warns == nil {
		cfg.warns = new(warnGate) // likewise
	}
	if cfg.park == nil {
		cfg.park = new(parker) // likewise
	}
	if cfg.budget == nil {
		cfg.budget = cfg.newBudget()
	}
	return &cfg, nil
}

// start runs the pipe's goroutine, or parks it.
func (p *Pipe) start() {
	p.prepare()
	p.run()
}

// prepare is the part of start that may ask the system about interfaces
// (by name, in the calling thread's network namespace): it runs where the
// socket was made. It starts the goroutines of a fan-out's other sockets.
func (p *Pipe) prepare() {
	if p.ln == nil && p.proto == UDP && p.udp != nil && p.ub == nil {
		p.initBatch()
	}
	if p.ln != nil || p.proto == UDP {
		p.startFan()
	}
}

// run, after prepare, parks the pipe or starts its goroutine; it may run
// on any thread.
func (p *Pipe) run() {
	switch {
	case p.ln != nil:
		if !p.canPark() || !p.park() {
			go p.acceptLoop()
		}
	case p.proto == UDP:
		if !p.canPark() || !p.park() {
			go p.udpLoop()
		}
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
			return errorf("p2pd: send: %w: UDP server pipe needs a destination", ErrInvalid)
		}
		err = p.sendTo(msg, to)
	case p.proto == UDP:
		if to.IsValid() && !sameAddr(to.AddrPort, p.remote) {
			return errorf("p2pd: send to %v: %w: a client pipe only sends to its peer %v", to.AddrPort, ErrInvalid, p.remote)
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
			return errorf("p2pd: send to %v: %w: a TCP pipe only sends to its peer %v", to.AddrPort, ErrInvalid, p.remote)
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
	if strings.HasPrefix(err.Error(), "p2pd: ") {
		return err // one of p2pd's, which says what failed
	}
	return &opError{op: "send to " + to.String(), err: err}
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
func (p *Pipe) Done() <-chan struct{} { return p.done.wait() }

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
		return errorf("p2pd: shutdown: %w: nil context", ErrInvalid)
	}
	p.drain()
	select {
	case <-p.done.wait():
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
	p.fan.drain()
	switch {
	case p.ln != nil:
		p.ln.Close()
		p.unpark()
		for _, c := range p.Clients() {
			c.drain()
		}
	case p.udp != nil:
		p.udp.SetReadDeadline(aLongTimeAgo)
		p.unpark()
	case p.pc != nil:
		p.pc.SetReadDeadline(aLongTimeAgo)
	case p.conn != nil:
		p.conn.SetReadDeadline(aLongTimeAgo)
		p.unpark()
	}
}

// unpark starts the goroutine of a parked pipe that is closing or
// draining, so that it ends.
func (p *Pipe) unpark() {
	if p.canPark() {
		p.cfg.park.wake(p)
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
	p.quit.fire()
	p.mu.Unlock()
	if p.ub != nil {
		p.ub.close()
	}
	p.fan.close()
	switch {
	case p.ln != nil:
		p.ln.Close()
		p.unpark()
	case p.udp != nil:
		p.udp.Close()
		p.unpark()
	case p.pc != nil:
		p.pc.Close()
	case p.conn != nil:
		p.conn.Close()
		p.unpark()
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
	p.done.fire()
	if p.server {
		p.cfg.park.release()
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

// dispatch hands one received message to subscriptions, linked pipes and
// the callback. It allocates nothing unless a subscription matches.
func (p *Pipe) dispatch(msg []byte, from Peer) {
	if t := p.taps.Load(); t != nil && p.intercepted(*t, msg, from) {
		return
	}
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
