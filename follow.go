package p2pd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// follow is one ListenAll call made in follow mode: its arguments, and
// the listeners it holds now, by address.
type follow struct {
	targets []Target // *Interface targets are read again by name at each reconcile
	ports   Ports
	protos  []Proto
	af      Family
	pipes   map[listenKey]*Pipe
	dup     map[netip.Addr]bool // addresses reported for failed DAD
}

// addFollow records a ListenAll call to follow, with what it opened.
func (d *Daemon) addFollow(targets []Target, ports Ports, protos []Proto, af Family, opened []*Pipe) {
	f := &follow{targets: targets, ports: ports, protos: protos, af: af,
		pipes: make(map[listenKey]*Pipe), dup: make(map[netip.Addr]bool)}
	d.mu.Lock()
	for _, p := range opened {
		if k, ok := d.keys[p]; ok {
			f.pipes[k] = p
		}
	}
	d.follows = append(d.follows, f)
	d.mu.Unlock()
}

// reconcile brings every followed call up to date with the interfaces as
// they are now: listeners for new addresses (same ports, protocols,
// families and IPv6 doubling), none for addresses gone or interfaces down.
// It runs on the watcher's goroutine, in the listeners' namespace. An
// update that changes nothing a listener depends on (an address lifetime)
// changes nothing.
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
		targets := f.refresh()
		w.reportDuplicates(f, targets)
		if p, err := expand(followTargets(targets), f.ports, f.protos, f.af, false); err == nil {
			for _, s := range p.specifics() {
				if port := s.Route.Bound.Port(); port != 0 {
					want[keyOf(s, port)] = s
				}
			}
		}
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
		// New: bind.
		for k, s := range want {
			if _, ok := f.pipes[k]; ok {
				continue
			}
			ps, err := d.followOpen(s)
			if err != nil {
				if !errors.Is(err, ErrDaemonClosed) {
					w.report(Event{Kind: EventFailed, Spec: s, Err: err})
				}
				continue
			}
			f.pipes[k] = ps
			w.report(Event{Kind: EventBound, Pipe: ps})
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

// refresh returns the targets with every *Interface read again by name; an
// interface that is gone serves nothing.
func (f *follow) refresh() []Target {
	out := make([]Target, 0, len(f.targets))
	for _, t := range f.targets {
		if ifc, ok := t.(*Interface); ok {
			now, err := InterfaceByName(ifc.Name)
			if err != nil {
				continue
			}
			t = now
		}
		out = append(out, t)
	}
	return out
}

func (d *Daemon) followOpen(s Specific) (*Pipe, error) {
	const op = "follow"
	if err := d.reserve(op, 1); err != nil {
		return nil, err
	}
	defer d.release(1)
	ps, err := d.open(context.Background(), op, []Specific{s})
	if err != nil {
		return nil, err
	}
	if len(ps) != 1 {
		return nil, fmt.Errorf("p2pd: follow: %d listeners for one address", len(ps))
	}
	return ps[0], nil
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
