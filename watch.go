package p2pd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"time"

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
	// EventFailed: the listener's address left its interface, or the
	// interface went down. The listener stays open (it serves again if the
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
}

func (e Event) String() string {
	if e.Pipe == nil {
		return fmt.Sprintf("%v %v: %v", e.Kind, e.Spec, e.Err)
	}
	s := fmt.Sprintf("%v %v %v", e.Kind, e.Pipe.Proto(), e.Pipe.LocalAddr())
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// addrWatcher checks, every interval, that the addresses of a daemon's
// listeners are still on an interface that is up, in the network namespace
// the daemon bound its first listeners in (a daemon whose listeners span
// namespaces is checked in that one only), and reports changes. Its
// goroutine is the daemon's: it ends on Close or Shutdown.
type addrWatcher struct {
	d        *Daemon
	interval time.Duration
	ns       *netns
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	failed   map[*Pipe]error // listeners reported failed, by the addrWatcher goroutine only
}

// startWatch starts the addrWatcher of d from the goroutine that binds d's
// listeners (its thread's network namespace is theirs).
func startWatch(d *Daemon, interval time.Duration) *addrWatcher {
	w := &addrWatcher{d: d, interval: interval, stop: make(chan struct{}), done: make(chan struct{}),
		failed: make(map[*Pipe]error)}
	ns, err := currentNetns()
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
	defer w.ns.close()
	defer close(w.done)
	if w.ns.isForeign() {
		// The thread enters the listeners' namespace for good: locked to
		// this goroutine, it exits with it and is never reused.
		runtime.LockOSThread()
		if err := w.ns.enter(); err != nil {
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
	for _, p := range listeners {
		seen[p] = true
		ip := p.LocalAddr().Addr()
		if ip.IsUnspecified() || !ip.IsValid() {
			continue // a wildcard: no one address to lose
		}
		var why error
		if isUp, ok := up[ip]; !ok {
			why = fmt.Errorf("%w: %v is on no interface", ErrAddrGone, ip)
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
