package p2pd

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"time"
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
)

func (k EventKind) String() string {
	switch k {
	case EventFailed:
		return "failed"
	case EventRestored:
		return "restored"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is a change in a listener's reachability, given to Daemon.OnEvent.
type Event struct {
	Kind EventKind
	Pipe *Pipe // the listener
	Err  error // EventFailed: wraps ErrAddrGone or ErrLinkDown
}

func (e Event) String() string {
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
	go w.run()
	return w
}

// close stops the addrWatcher and waits for it.
func (w *addrWatcher) close() {
	w.stopOnce.Do(func() {
		close(w.stop)
		<-w.done
		w.ns.close()
	})
	<-w.done
}

func (w *addrWatcher) run() {
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
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.check()
		case <-w.stop:
			return
		}
	}
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
	if e.Kind == EventFailed {
		log.Warn("p2pd: listener cannot receive", "proto", e.Pipe.Proto(), "addr", e.Pipe.LocalAddr(), "err", e.Err)
	} else {
		log.Info("p2pd: listener restored", "proto", e.Pipe.Proto(), "addr", e.Pipe.LocalAddr())
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
