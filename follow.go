package p2pd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// policy is a call's options, the Daemon's defaults read once when it
// began and then its ListenOptions.
type policy struct {
	follow     bool        // Daemon.Follow, the Follow option
	bestEffort bool        // Daemon.BestEffort, the BestEffort option
	errorOnAF  bool        // Daemon.ErrorOnAF, the ErrorOnAF option
	ownCB      bool        // the MsgCB option was given
	cb         MsgCallback // its callback
}

// follow is one ListenAll call made in follow mode: its arguments and
// policies, copied when it was made (the watcher reads them later, on its
// own goroutine, and must see neither the caller's later changes nor the
// Daemon's fields), and the listeners it holds now, by address.
type follow struct {
	targets  []Target // *Interface targets are read again by name at each reconcile
	ports    Ports
	protos   []Proto
	af       Family
	pol      policy
	pipes    map[listenKey]*Pipe
	dup      map[netip.Addr]bool // addresses reported for failed DAD
	unserved map[int]bool        // with ErrorOnAF: targets reported serving none of af
}

// addFollow records a ListenAll call to follow, with what it opened.
func (d *Daemon) addFollow(targets []Target, ports Ports, protos []Proto, af Family, pol policy, opened []*Pipe) {
	f := &follow{targets: copyTargets(targets), ports: slices.Clone(ports), protos: slices.Clone(protos), af: af, pol: pol,
		pipes: make(map[listenKey]*Pipe), dup: make(map[netip.Addr]bool), unserved: make(map[int]bool)}
	d.mu.Lock()
	for _, p := range opened {
		if k, ok := d.keys[p]; ok {
			f.pipes[k] = p
		}
	}
	d.follows = append(d.follows, f)
	d.mu.Unlock()
}

// copyTargets copies what the watcher reads of ts: an *Interface only by
// its name, routes with their address lists.
func copyTargets(ts []Target) []Target {
	out := make([]Target, len(ts))
	for i, t := range ts {
		switch t := t.(type) {
		case *Interface:
			out[i] = &Interface{Name: t.Name}
		case Route:
			out[i] = copyRoute(t)
		case RoutePool:
			pool := make(RoutePool, len(t))
			for j, r := range t {
				pool[j] = copyRoute(r)
			}
			out[i] = pool
		default:
			out[i] = t
		}
	}
	return out
}

func copyRoute(r Route) Route {
	r.NIC, r.Ext = slices.Clone(r.NIC), slices.Clone(r.Ext)
	return r
}

// reconcile brings every followed call up to date with the interfaces as
// they are now: listeners for new addresses (same ports, protocols,
// families and IPv6 doubling), none for addresses gone or interfaces down.
// It runs on the watcher's goroutine, in the listeners' namespace. An
// update that changes nothing a listener depends on (an address lifetime)
// changes nothing.
//
// The call's policies apply, as they were when it was made. BestEffort:
// without it, the listeners of a new address (every protocol and port of
// the call) are opened all or nothing, so an address is served in full or
// not at all (and tried again at the next reconcile); with it, each that
// binds is kept. ErrorOnAF: a target that comes to serve none of the
// call's families (its addresses gone, its interface down or gone) is
// reported once, as an EventFailed wrapping ErrFamilyUnsupported, where
// without it that is silent; its listeners go either way, and it is
// reported again after it has served again.
func (w *addrWatcher) reconcile() {
	d := w.d
	d.mu.Lock()
	fs := append([]*follow(nil), d.follows...)
	d.mu.Unlock()
	for _, f := range fs {
		if d.isClosed() {
			return
		}
		want := make(map[listenKey]Specific)
		var order []listenKey // want's keys, in the order the plan gives them
		targets := f.refresh()
		w.reportDuplicates(f, targets)
		unserved := make(map[int]bool)
		var notes []Event // reported after the unbinds they explain
		for i, t := range targets {
			var specs []Specific
			var err error
			what := "is gone"
			if t != nil {
				// One target at a time, so that one that serves nothing
				// does not make the others fail with it.
				var p *plan
				if p, err = expand(followTargets([]Target{t}), f.ports, f.protos, f.af, f.pol.errorOnAF); err == nil {
					specs = p.specifics()
				}
				what = "serves no address of family " + f.af.String()
			}
			if f.pol.errorOnAF && (t == nil || errors.Is(err, ErrFamilyUnsupported)) {
				unserved[i] = true
				if !f.unserved[i] {
					name := ""
					if ifc, ok := f.targets[i].(*Interface); ok {
						name = ifc.Name
					}
					notes = append(notes, Event{Kind: EventFailed, Spec: Specific{Route: Route{Family: f.af, Interface: name}},
						Err: wrapOp("follow", fmt.Errorf("%w: target %d (%s) %s (ErrorOnAF)",
							ErrFamilyUnsupported, i, f.targets[i].targetString(), what))})
				}
			}
			for _, s := range specs {
				if port := s.Route.Bound.Port(); port != 0 {
					if k := keyOf(s, port); !hasKey(want, k) {
						want[k] = s
						order = append(order, k)
					}
				}
			}
		}
		f.unserved = unserved
		// Gone: unbind.
		for k, p := range f.pipes {
			if _, ok := want[k]; ok && !isDone(p) {
				continue
			}
			delete(f.pipes, k)
			if !isDone(p) {
				p.Close()
				w.report(Event{Kind: EventUnbound, Pipe: p})
			}
		}
		for _, e := range notes {
			w.report(e)
		}
		// New: bind, address by address.
		var group []Specific
		for i, k := range order {
			if _, ok := f.pipes[k]; !ok {
				group = append(group, want[k])
			}
			if i+1 < len(order) && sameHost(k, order[i+1]) {
				continue
			}
			if len(group) > 0 {
				w.followOpen(f, group)
			}
			group = nil
		}
	}
}

func hasKey(m map[listenKey]Specific, k listenKey) bool { _, ok := m[k]; return ok }

// sameHost reports whether two keys are one address of one family: their
// listeners are opened together (all or nothing unless best effort).
func sameHost(a, b listenKey) bool { return a.f == b.f && a.ip == b.ip }

// followOpen opens the new listeners of one address for f, with f's
// policy, and reports what happened.
func (w *addrWatcher) followOpen(f *follow, specs []Specific) {
	const op = "follow"
	d := w.d
	if err := d.reserve(op, len(specs)); err != nil {
		if !errors.Is(err, ErrDaemonClosed) {
			for _, s := range specs {
				w.report(Event{Kind: EventFailed, Spec: s, Err: err})
			}
		}
		return
	}
	ps, err := d.open(context.Background(), op, specs, f.pol)
	d.release(len(specs))
	var lerr *ListenError
	if err != nil && !errors.As(err, &lerr) {
		if !errors.Is(err, ErrDaemonClosed) {
			for _, s := range specs {
				w.report(Event{Kind: EventFailed, Spec: s, Err: err})
			}
		}
		return
	}
	for _, p := range ps {
		d.mu.Lock()
		k, ok := d.keys[p]
		d.mu.Unlock()
		if ok {
			f.pipes[k] = p
			w.report(Event{Kind: EventBound, Pipe: p})
		}
	}
	if lerr == nil {
		return
	}
	// One event per failed bind, each with its own error (and whether the
	// address's other listeners were closed again).
	for _, s := range specs {
		for _, be := range lerr.Failed {
			if be.Proto == s.Proto && be.Addr == s.Route.Bound {
				w.report(Event{Kind: EventFailed, Spec: s,
					Err: &ListenError{Op: op, Tried: lerr.Tried, Failed: []*BindError{be}, Closed: lerr.Closed}})
				break
			}
		}
	}
}

// reportDuplicates reports, once each, the addresses of followed
// interfaces whose duplicate address detection failed: they are not
// bound.
func (w *addrWatcher) reportDuplicates(f *follow, targets []Target) {
	seen := make(map[netip.Addr]bool)
	for _, t := range targets {
		ifc, ok := t.(*Interface)
		if !ok {
			continue
		}
		for _, a := range ifc.Addrs {
			if a.Flags&AddrDADFailed == 0 {
				continue
			}
			seen[a.Addr] = true
			if f.dup[a.Addr] {
				continue
			}
			f.dup[a.Addr] = true
			fam := FamilyOf(a.Addr)
			w.report(Event{Kind: EventFailed,
				Spec: Specific{Route: Route{Family: fam, Interface: ifc.Name, NIC: []netip.Addr{a.Addr}, Bound: netip.AddrPortFrom(a.Addr, 0)}},
				Err:  fmt.Errorf("%w: %v on %s, not bound", ErrDADFailed, a.Addr, ifc.Name)})
		}
	}
	for a := range f.dup {
		if !seen[a] {
			delete(f.dup, a) // removed: report it again should it come back
		}
	}
}

// refresh returns the targets with every *Interface read again by name,
// index for index; an interface that is gone is nil.
func (f *follow) refresh() []Target {
	out := make([]Target, len(f.targets))
	for i, t := range f.targets {
		if ifc, ok := t.(*Interface); ok {
			now, err := InterfaceByName(ifc.Name)
			if err != nil {
				continue
			}
			t = now
		}
		out[i] = t
	}
	return out
}

func isDone(p *Pipe) bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

// everyAddr is how follow mode serves an *Interface target: every usable
// address of it, each as a route of its own (IPv6 ones with the
// interface's link-local address), where a plain ListenAll serves its
// first route's default address.
type everyAddr struct{ ifc *Interface }

func (t everyAddr) listenRoutes(f Family) (RoutePool, error) {
	if t.ifc == nil {
		return nil, fmt.Errorf("%w: nil *Interface target", ErrInvalid)
	}
	if !t.ifc.Supports(f) {
		return nil, nil
	}
	var out RoutePool
	for _, r := range t.ifc.Routes(f) {
		var lls []netip.Addr
		for _, a := range r.NIC {
			if f == IPv6 && a.IsLinkLocalUnicast() {
				lls = append(lls, a)
			}
		}
		for _, a := range r.NIC {
			if f == IPv6 && a.IsLinkLocalUnicast() {
				continue
			}
			one := r
			one.NIC = append([]netip.Addr{a}, lls...)
			one.Bound = netip.AddrPort{}
			out = append(out, one)
		}
	}
	return out, nil
}

func (t everyAddr) targetString() string { return t.ifc.targetString() + " (every address)" }

// followTargets replaces *Interface targets by everyAddr ones.
func followTargets(ts []Target) []Target {
	out := make([]Target, len(ts))
	for i, t := range ts {
		if ifc, ok := t.(*Interface); ok && ifc != nil {
			t = everyAddr{ifc}
		}
		out[i] = t
	}
	return out
}
