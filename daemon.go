package p2pd

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Daemon is a server made of many listeners (server pipes): P2PD's Daemon.
// Where P2PD subclasses Daemon and defines msg_cb, a Go program embeds a
// Daemon in its own type, defines MsgCB on it and makes it the callback:
//
//	type Echo struct{ p2pd.Daemon }
//
//	func (e *Echo) MsgCB(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { p.Send(msg, from) }
//
//	e := new(Echo)
//	e.OnMsg = e
//	defer e.Close()
//	_, err := e.ListenAll(ctx, []p2pd.Target{ifc}, p2pd.Ports{p2pd.Port(10000)}, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
//
// or gives a call its own callback, as P2PD's listen_all(..., msg_cb=...)
// does: d.ListenAll(ctx, targets, ports, protos, af, p2pd.MsgCB(cb)).
//
// Every listener takes its settings (callbacks, timeouts, limits, framing,
// TLS, socket options, logger) from the embedded PipeConfig: each setting
// has that one home. The Daemon's own fields are what concerns the daemon
// as a whole, and the defaults of the per-call options ([ListenOption]).
//
// The zero value is a valid configuration. Set the exported fields before
// the first call that opens listeners and do not change them afterwards
// (use [Daemon.SetOnMsg] to change the callback of a running daemon). The
// exceptions are Follow, ErrorOnAF and BestEffort, the defaults of a call's
// options: each call reads them once, when it begins, and a call in follow
// mode keeps its own for as long as it is followed, so they may be changed
// between calls (not while a call made by another goroutine begins). The
// methods are safe for concurrent use.
//
// A Daemon stops with [Daemon.Close] (at once) or [Daemon.Shutdown]
// (gracefully). After either, every method that opens listeners returns
// ErrDaemonClosed, and the Daemon cannot be reused.
//
// # Listener lifetime and socket options
//
// Listeners bind on the goroutine that calls ListenAll, ListenSpecific or
// AddListener, one after another, so a caller whose OS thread has entered a
// network namespace gets its listeners in that namespace.
//
// TCP listeners get SO_REUSEADDR on Unix (as Go's net package does): after a
// Close, or after the process was killed, the port's old connections linger
// in TIME_WAIT, and without SO_REUSEADDR a restart would fail with "address
// in use" for up to a minute. On Linux SO_REUSEADDR never lets two live
// listeners share a TCP port, so a second live instance is still refused
// with ErrAddrInUse. UDP sockets do not get it unless ReuseAddr is set,
// because on UDP it does let two live sockets share a port (silently
// splitting the traffic, the bug P2PD has). SO_REUSEPORT is never set, for
// the same reason, unless PipeConfig.Sockets asks for several sockets per
// listener: then the listener's own sockets share its address, and a
// second instance is still refused (see [PipeConfig.Sockets]). SO_LINGER
// is left to the OS default (Linger = 0): a closed connection still
// delivers its last data, and the TIME_WAIT it leaves does not block a
// restart thanks to SO_REUSEADDR; a negative Linger (reset on close) would
// lose data in flight and is not needed for restarts.
// A listener left by a crashed process does not exist: the kernel closes a
// dead process's sockets, so nothing like P2PD's "zombie" check is needed.
type Daemon struct {
	// PipeConfig holds the settings of every listener and of the
	// connections it accepts. OnMsg receives every message (see
	// [MsgCallback]); OnEnd is also called for the listeners (p.IsServer()
	// is true for them), including those that a failed all-or-nothing call
	// closed again; MaxConns caps each listener's connections, MaxBuffered
	// is one budget over all the daemon's listeners; Logger also gets the
	// daemon's own logs.
	PipeConfig

	// MaxListeners caps the number of listeners the daemon holds. A call
	// that would take it over is refused before anything is bound, with a
	// *LimitError that says how many listeners the call would open. Zero:
	// DefaultMaxListeners (1024). Negative: no limit.
	MaxListeners int

	// MaxTotalConns caps the TCP connections open at once over all the
	// daemon's listeners; each listener also has its own cap (MaxConns). A
	// connection beyond either is handled as PipeConfig.MaxConns says.
	// Zero: DefaultDaemonMaxConns. Negative: no limit.
	MaxTotalConns int

	// OnEvent, if set, is told when a listener's address or interface goes
	// away and when it comes back (see [Event]); the daemon also logs both.
	// It is called from the daemon's watcher goroutine, one event at a
	// time.
	OnEvent func(Event)

	// Follow keeps every ListenAll call up to date with its *Interface
	// targets, each of which then serves every usable address of the
	// interface (not only its first route's, as without Follow). An
	// address that appears on such an interface gets listeners
	// (the call's ports, protocols and families, IPv6 doubled), and one
	// that goes away, or whose interface goes down, loses them, each
	// change reported as EventBound or EventUnbound. On Linux the daemon
	// follows the kernel's address and link notifications (a burst of them
	// is handled once, 100 ms after it quiets down); elsewhere it polls
	// every WatchInterval. Route and RoutePool targets are bound as given.
	// A tentative IPv6 address is bound once its DAD is done; one whose
	// DAD failed is not bound. Ports must be fixed (not 0). The call's
	// BestEffort and ErrorOnAF, as they were when it was made, go on
	// applying: the listeners of a new address are opened all or nothing
	// unless BestEffort, and with ErrorOnAF a target that comes to serve
	// none of the call's families is reported (EventFailed wrapping
	// ErrFamilyUnsupported).
	Follow bool

	// WatchInterval is how often the daemon checks that its listeners'
	// addresses are still there. Zero: DefaultWatchInterval. Negative: no
	// checks.
	WatchInterval time.Duration

	// ErrorOnAF is P2PD's error_on_af. False: ListenAll skips a family that
	// a target does not serve. True: that is an error, and nothing is
	// bound (with AnyFamily, only a target that serves no family at all is
	// an error). See [Daemon.ListenAll].
	ErrorOnAF bool

	// BestEffort makes a call keep what it could bind when some binds
	// fail; it returns those listeners together with a *ListenError. False
	// (the default): all or nothing, a failure closes every listener the
	// call opened.
	BestEffort bool

	mu        sync.Mutex
	listeners map[listenKey]*Pipe
	keys      map[*Pipe]listenKey
	reserved  int                // listeners that calls in progress may still add
	binding   map[listenKey]bool // fixed-port keys that calls in progress are binding
	cb        MsgCallback        // set by SetOnMsg
	cbSet     bool
	ownCB     map[*Pipe]bool // listeners opened with a callback of their own (the MsgCB option)
	closed    bool
	own       group        // calls in progress, listeners and the watcher, for Shutdown
	dog       watcher      // the watchdog of the listeners' blocked UDP batches
	warns     warnGate     // repeated warnings of the listeners, rate-limited
	park      parker       // where idle listeners and connections wait (park_linux.go)
	limit     *connLimit   // MaxConns, made with the first listener
	budget    *budget      // Pipe.MaxBuffered, made with the first listener
	watch     *addrWatcher // the address watcher, started with the first listener
	follows   []*follow    // ListenAll calls in follow mode
}

// listenKey is P2PD's servers[af][proto][port][ip].
type listenKey struct {
	f     Family
	proto Proto
	port  uint16
	ip    netip.Addr // zoned for IPv6 link-local
}

func (d *Daemon) logger() *slog.Logger { return d.PipeConfig.logger() }

func (d *Daemon) maxListeners() int {
	if d.MaxListeners == 0 {
		return DefaultMaxListeners
	}
	return d.MaxListeners
}

// msgCB returns the callback of new listeners that a call gave none of
// their own. d.mu is held.
func (d *Daemon) msgCB() MsgCallback {
	if d.cbSet {
		return d.cb
	}
	return d.OnMsg
}

// callConfig returns the settings of the listeners one call opens: the
// daemon's, with the call's callback if it has one, copied and checked.
func (d *Daemon) callConfig(pol policy) (*PipeConfig, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.PipeConfig
	c.OnMsg = d.msgCB()
	if pol.ownCB {
		c.OnMsg = pol.cb
	}
	c.ended = d.forget
	c.group = &d.own
	c.dog = &d.dog
	c.warns = &d.warns
	c.park = &d.park
	if d.limit == nil && d.MaxTotalConns >= 0 {
		d.limit = &connLimit{max: int64(cmp.Or(d.MaxTotalConns, DefaultDaemonMaxConns))}
	}
	c.limit = d.limit
	if d.budget == nil {
		d.budget = d.PipeConfig.newBudget() // nil: no limit
	}
	c.budget = d.budget
	return copyConfig(&c)
}

// forget drops a listener that ended (closed by its owner or by the daemon).
func (d *Daemon) forget(p *Pipe) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if k, ok := d.keys[p]; ok {
		delete(d.keys, p)
		delete(d.listeners, k)
	}
	delete(d.ownCB, p)
}

// group counts what a Daemon owns that still runs (calls in progress,
// listeners' goroutines, the watcher), so that Shutdown can wait for all
// of it without a goroutine of its own. A nil *group counts nothing.
type group struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while nobody waits
}

func (g *group) add(n int) {
	if g != nil {
		g.mu.Lock()
		g.n += n
		g.mu.Unlock()
	}
}

func (g *group) done() {
	if g == nil {
		return
	}
	g.mu.Lock()
	if g.n--; g.n == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
	g.mu.Unlock()
}

// wait returns a channel closed once nothing runs.
func (g *group) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	return g.idle
}

// ListenError reports the failed binds of one ListenAll, ListenSpecific or
// AddListener call. Failed lists every bind that failed, in the order tried.
// errors.Is(err, ErrAddrInUse) and errors.As(err, &bindErr) look into them.
type ListenError struct {
	Op     string // "listen all", "listen specific", "add listener"
	Tried  int    // binds the call tried
	Failed []*BindError
	// Closed is true when the call closed the listeners it had opened
	// (all or nothing); false when it kept them (Daemon.BestEffort).
	Closed bool
}

const listenErrorShown = 8 // failed binds spelled out in Error

func (e *ListenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "p2pd: %s: %d of %d binds failed", e.Op, len(e.Failed), e.Tried)
	if e.Closed {
		b.WriteString(" (all closed again)")
	}
	for i, f := range e.Failed {
		if i == listenErrorShown {
			fmt.Fprintf(&b, "; and %d more (see ListenError.Failed)", len(e.Failed)-i)
			break
		}
		b.WriteString("; ")
		b.WriteString(trimPrefix(f))
	}
	return b.String()
}

// Unwrap returns the failed binds, for errors.Is and errors.As.
func (e *ListenError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f
	}
	return errs
}

// opError prefixes an error with the operation, so that it reads "p2pd: "
// once.
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string { return "p2pd: " + e.op + ": " + trimPrefix(e.err) }
func (e *opError) Unwrap() error { return e.err }

func wrapOp(op string, err error) error { return &opError{op, err} }

func (d *Daemon) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// Lookup returns the listener for family f, protocol proto, port and IP, or
// nil: P2PD's servers[af][proto][port][ip]. The port is the real one, also
// for listeners opened with port 0. ip is the bound address as given to the
// listener: an IPv6 link-local one carries its zone, a wildcard listener is
// found under 0.0.0.0 or ::. A link-local address given without its zone
// finds the listener when exactly one interface has that address (with a
// listener there); nil when none or several do.
func (d *Daemon) Lookup(f Family, proto Proto, port uint16, ip netip.Addr) *Pipe {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	if p := d.listeners[listenKey{f: f, proto: proto, port: port, ip: ip}]; p != nil || ip.Zone() != "" || !ip.Is6() || !ip.IsLinkLocalUnicast() {
		return p
	}
	var found *Pipe
	for k, p := range d.listeners {
		if k.f == f && k.proto == proto && k.port == port && k.ip.WithZone("") == ip {
			if found != nil {
				return nil // on several interfaces: the zone is needed
			}
			found = p
		}
	}
	return found
}

// Select returns the listeners that match f, proto and port, sorted as
// Listeners sorts them. A zero argument matches anything: AnyFamily, Proto
// 0, port 0.
func (d *Daemon) Select(f Family, proto Proto, port uint16) []*Pipe {
	d.mu.Lock()
	keys := make([]listenKey, 0, len(d.listeners))
	for k, p := range d.listeners {
		if (f == AnyFamily || k.f == f) && (proto == 0 || k.proto == proto) && (port == 0 || k.port == port) && !d.closed && !p.closed.Load() {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b listenKey) int {
		return cmp.Or(cmp.Compare(a.f, b.f), cmp.Compare(a.proto, b.proto), a.ip.Compare(b.ip), cmp.Compare(a.port, b.port))
	})
	out := make([]*Pipe, len(keys))
	for i, k := range keys {
		out[i] = d.listeners[k]
	}
	d.mu.Unlock()
	return out
}

// Listeners returns every listener of the daemon, sorted by family, protocol,
// address and port. It is empty after Close or Shutdown. A listener that
// was closed is left out at once, though it may still be ending (see
// Pipe.Done).
func (d *Daemon) Listeners() []*Pipe { return d.Select(AnyFamily, 0, 0) }

// Len returns the number of listeners the daemon holds.
func (d *Daemon) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0
	}
	n := 0
	for _, p := range d.listeners {
		if !p.closed.Load() {
			n++ // a closed one is gone, or about to be
		}
	}
	return n
}

// SetOnMsg replaces the daemon's message callback (OnMsg) at once: that of
// every listener opened without a callback of its own (the MsgCB option),
// of the connections they accepted, and of the listeners opened later
// without one (P2PD's add_msg_cb, which adds a callback where this
// replaces it: compose several in one). Messages being handled finish
// with the old callback. A nil cb leaves messages to subscriptions only.
// After Close or Shutdown it returns ErrDaemonClosed.
func (d *Daemon) SetOnMsg(cb MsgCallback) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return wrapOp("set on msg", ErrDaemonClosed)
	}
	d.cb, d.cbSet = cb, true
	for _, p := range d.listeners {
		if !d.ownCB[p] {
			p.SetOnMsg(cb)
		}
	}
	return nil
}

// stop marks the daemon closed, stops the watcher, and returns the
// listeners to stop. It waits for nothing: calls in progress close what
// they opened when they see the daemon closed.
func (d *Daemon) stop() []*Pipe {
	d.mu.Lock()
	d.closed = true
	ps := make([]*Pipe, 0, len(d.listeners))
	for _, p := range d.listeners {
		ps = append(ps, p)
	}
	w := d.watch
	d.mu.Unlock()
	if w != nil {
		w.close()
	}
	return ps
}

// Close stops the daemon at once, as net/http's Server.Close does: it
// closes every listener and every connection (see [Pipe.Close]), stops the
// address watcher, and makes calls in progress close what they opened and
// return ErrDaemonClosed. It waits for nothing, so it may be called from
// anywhere, a callback or OnEvent included; callbacks still running finish
// on their own ([Daemon.Shutdown] waits for them). Close may be called more
// than once and concurrently with Shutdown; it returns nil.
func (d *Daemon) Close() error {
	closeAll(d.stop())
	return nil
}

// closeAll closes pipes, spread over the CPUs when there are many (closing
// a socket is a system call; those of different sockets run in parallel),
// and returns when every socket is closed.
func closeAll(ps []*Pipe) {
	n := min(runtime.GOMAXPROCS(0), len(ps)/closeChunk)
	if n < 2 {
		for _, p := range ps {
			p.closeNoWait()
		}
		return
	}
	var wg sync.WaitGroup
	for i := range n {
		part := ps[i*len(ps)/n : (i+1)*len(ps)/n]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, p := range part {
				p.closeNoWait()
			}
		}()
	}
	wg.Wait()
}

// closeChunk is the fewest pipes worth a goroutine of closeAll.
const closeChunk = 256

// Shutdown stops the daemon gracefully: every listener stops accepting and
// reading, calls in progress close what they opened, messages being handled
// finish (see [Pipe.Shutdown]), and Shutdown returns nil once everything
// the daemon ran has ended: listeners, connections, callbacks, OnEnd and
// the watcher. After a Close it just waits for that.
//
// If ctx ends first, every socket is closed at once (as Close) and
// Shutdown returns ctx.Err() without waiting for callbacks still running;
// they end when they return.
//
// Shutdown waits for callbacks, so do not call it from a MsgCB, OnUp,
// OnEnd or OnEvent of the daemon with a context that never ends: it cannot
// finish before that callback returns. Close is the call for a callback.
// Shutdown may be called more than once and concurrently with Close.
func (d *Daemon) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return wrapOp("shutdown", fmt.Errorf("%w: nil context", ErrInvalid))
	}
	ps := d.stop()
	for _, p := range ps {
		p.drain()
	}
	select {
	case <-d.own.wait():
		return nil
	case <-ctx.Done():
		for _, p := range ps {
			p.closeNoWait()
		}
		return ctx.Err()
	}
}
