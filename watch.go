package p2pd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pd/p2pd/internal/netns"
	"github.com/p2pd/p2pd/internal/rtnl"
)

// Defaults of a zero Daemon.
const (
	DefaultWatchInterval  = time.Second
	DefaultDaemonMaxConns = 65536
)

// EventKind says what happened to a listener.
type EventKind int

const (
	// EventFailed: the listener's address left its interface (or, for an
	// address on no interface, the local route that made it local went),
	// or the interface went down. The listener stays open (it serves again if the
	// address comes back) but cannot receive meanwhile. Err says why.
	EventFailed EventKind = iota + 1
	// EventRestored: the address and its interface are back.
	EventRestored
	// EventBound: in follow mode, a listener was opened for an address
	// that appeared (or an interface that came up).
	EventBound
	// EventUnbound: in follow mode, a listener was closed because its
	// address or interface went away.
	EventUnbound
)

func (k EventKind) String() string {
	switch k {
	case EventFailed:
		return "failed"
	case EventRestored:
		return "restored"
	case EventBound:
		return "bound"
	case EventUnbound:
		return "unbound"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is a change in a listener's reachability, given to Daemon.OnEvent.
type Event struct {
	Kind EventKind
	Pipe *Pipe    // the listener; nil for a bind that failed in follow mode
	Spec Specific // for a bind that failed in follow mode: what was tried
	Err  error    // EventFailed: wraps ErrAddrGone or ErrLinkDown, or the bind error
	// In follow mode with ErrorOnAF, an EventFailed whose Err wraps
	// ErrFamilyUnsupported (Pipe nil, Spec.Proto 0) reports a target that
	// serves none of the call's families any more: Spec.Route has the
	// call's family and, for an *Interface target, its name.
}

func (e Event) String() string {
	switch {
	case e.Pipe == nil && e.Spec.Proto == 0: // a target, not a bind
		return fmt.Sprintf("%v %s %q: %v", e.Kind, e.Spec.Route.Family, e.Spec.Route.Interface, e.Err)
	case e.Pipe == nil:
		return fmt.Sprintf("%v %v: %v", e.Kind, e.Spec, e.Err)
	}
	s := fmt.Sprintf("%v %v %v", e.Kind, e.Pipe.Proto(), e.Pipe.LocalAddr())
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// addrWatcher checks, every interval, that the addresses of a daemon's
// listeners are still on an interface that is up (or covered by a local
// route, see localRoutes), in the network namespace
// the daemon bound its first listeners in (a daemon whose listeners span
// namespaces is checked in that one only), and reports changes. Its
// goroutine is the daemon's: it ends on Close or Shutdown.
type addrWatcher struct {
	d        *Daemon
	interval time.Duration
	ns       *netns.NS
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	failed   map[*Pipe]error // listeners reported failed, by the addrWatcher goroutine only
	checks   atomic.Uint64   // checks done, for tests that wait for some
}

// startWatch starts the addrWatcher of d from the goroutine that binds d's
// listeners (its thread's network namespace is theirs).
func startWatch(d *Daemon, interval time.Duration) *addrWatcher {
	w := &addrWatcher{d: d, interval: interval, stop: make(chan struct{}), done: make(chan struct{}),
		failed: make(map[*Pipe]error)}
	ns, err := netns.Current()
	if err != nil {
		d.logger().Warn("p2pd: not watching listener addresses", "err", err)
		close(w.done)
		return w
	}
	w.ns = ns
	d.own.add(1)
	go w.run()
	return w
}

// close tells the addrWatcher to stop; it does not wait (it may be called
// from OnEvent, on the watcher's own goroutine): the Daemon's Shutdown
// does.
func (w *addrWatcher) close() {
	w.stopOnce.Do(func() { close(w.stop) })
}

func (w *addrWatcher) run() {
	defer w.d.own.done()
	defer w.ns.Close()
	defer close(w.done)
	if w.ns.Foreign() {
		// The thread enters the listeners' namespace for good: locked to
		// this goroutine, it exits with it and is never reused.
		runtime.LockOSThread()
		if err := w.ns.Enter(); err != nil {
			w.d.logger().Warn("p2pd: not watching listener addresses", "err", err)
			return
		}
	}
	// The kernel's notifications (Linux) trigger a check 100 ms after a
	// burst of them quiets down (at most 1 s after it began); the ticker
	// catches anything missed, and is all there is elsewhere.
	changes := make(chan struct{}, 1)
	if m, err := rtnl.OpenMonitor(); err == nil {
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			for {
				_, err := m.Next()
				if err != nil && !errors.Is(err, rtnl.ErrOverflow) {
					return // closed
				}
				select {
				case changes <- struct{}{}:
				default:
				}
			}
		}()
		defer func() { m.Close(); <-ended }()
		// What changed before the subscription began is caught up now.
		w.tick()
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	var burst time.Time
	for {
		select {
		case <-t.C:
			w.tick()
		case <-changes:
			now := time.Now()
			if burst.IsZero() {
				burst = now
			}
			if now.Sub(burst) >= debounceMax {
				burst = time.Time{}
				quiet.Stop()
				w.tick()
			} else {
				quiet.Reset(debounce)
			}
		case <-quiet.C:
			burst = time.Time{}
			w.tick()
		case <-w.stop:
			return
		}
	}
}

const (
	debounce    = 100 * time.Millisecond
	debounceMax = time.Second
)

// tick brings followed calls up to date, then checks every listener.
func (w *addrWatcher) tick() {
	w.d.mu.Lock()
	following := len(w.d.follows) > 0
	w.d.mu.Unlock()
	if following {
		w.reconcile()
	}
	w.check()
	w.checks.Add(1)
}

// check compares every listener's address with the interfaces.
func (w *addrWatcher) check() {
	ifs, err := Interfaces()
	if err != nil {
		w.d.logger().Debug("p2pd: watch: listing interfaces", "err", err)
		return
	}
	up := make(map[netip.Addr]bool) // address (zoned if link-local) → its interface is up
	for _, ifc := range ifs {
		isUp := ifc.Flags&net.FlagUp != 0
		for _, a := range ifc.Addrs {
			if a.Flags&AddrDADFailed != 0 {
				continue
			}
			ip := a.Addr
			if ip.Is6() && ip.IsLinkLocalUnicast() {
				up[ip.WithZone(ifc.Name)] = isUp
				up[ip.WithZone(strconv.Itoa(ifc.Index))] = isUp
				continue
			}
			up[ip] = up[ip] || isUp
		}
	}
	listeners := w.d.Listeners()
	seen := make(map[*Pipe]bool, len(listeners))
	var local localRoutes // read once per check, and only if needed
	for _, p := range listeners {
		if p.closed.Load() {
			continue // closing (follow mode unbinds, say): not failed, and gone soon
		}
		seen[p] = true
		ip := p.LocalAddr().Addr()
		if ip.IsUnspecified() || !ip.IsValid() {
			continue // a wildcard: no one address to lose
		}
		isUp, ok := up[ip]
		if !ok {
			var err error
			if isUp, ok, err = local.covers(ip, ifs); err != nil {
				w.d.logger().Debug("p2pd: watch: reading the local routes", "err", err)
				continue // unknown: as it was
			}
		}
		var why error
		if !ok {
			why = fmt.Errorf("%w: %v is on no interface, and no local route covers it", ErrAddrGone, ip)
		} else if !isUp {
			why = fmt.Errorf("%w: the interface of %v", ErrLinkDown, ip)
		}
		_, was := w.failed[p]
		switch {
		case why != nil && !was:
			w.failed[p] = why
			w.report(Event{Kind: EventFailed, Pipe: p, Err: why})
		case why == nil && was:
			delete(w.failed, p)
			w.report(Event{Kind: EventRestored, Pipe: p})
		}
	}
	for p := range w.failed {
		if !seen[p] {
			delete(w.failed, p) // closed meanwhile
		}
	}
}

// localRoutes tells whether the kernel takes as its own an address that no
// interface has: 127.0.0.2 (the local route 127.0.0.0/8 on lo that comes
// with 127.0.0.1/8), an AnyIP prefix (ip route add local 2001:db8:99::/64
// dev lo), the address of a FreeBind listener that such a route covers.
//
// It reads the local routing table (rtnetlink, in the thread's namespace,
// which is the listeners'): an address is local when a route of type local
// in that table covers it, which is what the kernel goes by to deliver, for
// both families, and where `ip route add local` puts a route by default.
// (Local routes of other tables count only through policy rules, such as
// TPROXY's `local 0.0.0.0/0 dev lo table 100` for marked packets: counting
// them would make every address look present.) A probe bind without
// IP_FREEBIND would be simpler but is wrong on Linux twice over: IPv6 bind
// accepts only interface addresses (an IPv6 AnyIP address needs FreeBind,
// so the probe would call a working listener gone), and with
// net.ipv4.ip_nonlocal_bind=1 every address binds (so it would never call
// one gone). Elsewhere, where there is no rtnetlink, the probe is what
// there is.
//
// The table is dumped at most once per check and family, and only for a
// listener whose address is on no interface. Route changes are not among
// the notifications the watcher subscribes to: the ticker catches them.
type localRoutes struct {
	read   [2]bool         // IPv4, IPv6
	err    [2]error        // of the dump
	routes [2][]rtnl.Route // of type local, in the local table
	probe  bool            // no rtnetlink here: probe with a bind
}

// covers reports whether ip is local to the kernel (ok), and whether the
// interface of the route that makes it so is up (up; true when unknown).
// An error means it could not tell.
func (l *localRoutes) covers(ip netip.Addr, ifs []Interface) (up, ok bool, err error) {
	fam, i := uint8(rtnl.FamilyIPv4), 0
	if ip.Is6() && !ip.Is4In6() {
		fam, i = rtnl.FamilyIPv6, 1
	}
	if !l.read[i] && !l.probe {
		l.read[i] = true
		rs, err := rtnl.DumpRoutes(fam)
		if errors.Is(err, errors.ErrUnsupported) {
			l.probe = true
		} else {
			l.err[i] = err
		}
		for _, r := range rs {
			if r.Type == rtnl.TypeLocal && r.Table == rtnl.TableLocal {
				l.routes[i] = append(l.routes[i], r)
			}
		}
	}
	if l.probe {
		return true, probeBind(ip), nil
	}
	if l.err[i] != nil {
		return false, false, l.err[i]
	}
	zone := 0 // the interface a zoned (link-local) address must be local on
	if z := ip.Zone(); z != "" {
		for _, ifc := range ifs {
			if ifc.Name == z || strconv.Itoa(ifc.Index) == z {
				zone = ifc.Index
			}
		}
		if zone == 0 {
			return false, false, nil
		}
	}
	bare := ip.WithZone("").Unmap()
	best := -1
	var out uint32
	for _, r := range l.routes[i] {
		if pfx := r.Prefix(); pfx.Contains(bare) && pfx.Bits() > best &&
			(zone == 0 || r.OutIndex == 0 || int(r.OutIndex) == zone) {
			best, out = pfx.Bits(), r.OutIndex
		}
	}
	if best < 0 {
		return false, false, nil
	}
	for _, ifc := range ifs {
		if ifc.Index == int(out) {
			return ifc.Flags&net.FlagUp != 0, true, nil
		}
	}
	return true, true, nil
}

// probeBind reports whether a UDP socket can bind ip (port 0, no
// FreeBind): the portable test of a local address.
func probeBind(ip netip.Addr) bool {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (w *addrWatcher) report(e Event) {
	log := w.d.logger()
	switch {
	case e.Kind == EventFailed && e.Pipe == nil:
		log.Warn("p2pd: follow: bind failed", "spec", e.Spec, "err", e.Err)
	case e.Kind == EventFailed:
		log.Warn("p2pd: listener cannot receive", "proto", e.Pipe.Proto(), "addr", e.Pipe.LocalAddr(), "err", e.Err)
	default:
		log.Info("p2pd: listener "+e.Kind.String(), "proto", e.Pipe.Proto(), "addr", e.Pipe.LocalAddr())
	}
	if f := w.d.OnEvent; f != nil {
		defer func() {
			if r := recover(); r != nil {
				log.Error("p2pd: panic in OnEvent (recovered)", "panic", r)
			}
		}()
		f(e)
	}
}
