package p2pd

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
)

// DefaultMaxListeners is the number of listeners a Daemon may hold when its
// MaxListeners is 0.
const DefaultMaxListeners = 1024

// plan is an expanded ListenAll request: every distinct address to bind,
// as a route bound to it with port 0, times protos times ports.
type plan struct {
	addrs  []Route // bound routes, port 0; distinct (family, address with zone)
	protos []Proto // distinct, in the order given
	ports  Ports   // valid
}

// count returns the number of listeners the plan opens.
func (p *plan) count() int { return len(p.addrs) * len(p.protos) * p.ports.Count() }

// specifics lists the plan's listeners in the order ListenAll opens them:
// target by target, IPv4 before IPv6, the default address before the
// link-local one, then protocol, then port.
func (p *plan) specifics() []Specific {
	out := make([]Specific, 0, p.count())
	for _, r := range p.addrs {
		for _, proto := range p.protos {
			for port := range p.ports.All() {
				b := r
				b.Bound = netip.AddrPortFrom(r.Bound.Addr(), port)
				out = append(out, Specific{Route: b, Proto: proto})
			}
		}
	}
	return out
}

// expand checks a ListenAll request and computes its plan without
// materializing the listeners, so that the guard can run on p.count() before
// anything large is allocated or bound.
func expand(targets []Target, ports Ports, protos []Proto, af Family, errorOnAF bool) (*plan, error) {
	fail := func(format string, a ...any) error {
		return wrapOp("listen all", fmt.Errorf(format, a...))
	}
	if len(targets) == 0 {
		return nil, fail("%w: no targets", ErrInvalid)
	}
	if err := ports.Validate(); err != nil {
		return nil, err
	}
	if len(protos) == 0 {
		return nil, fail("%w: no protocols", ErrInvalid)
	}
	p := &plan{ports: ports}
	for _, proto := range protos {
		if proto != TCP && proto != UDP {
			return nil, fail("%w: protocol %v", ErrInvalid, proto)
		}
		if !slices.Contains(p.protos, proto) {
			p.protos = append(p.protos, proto)
		}
	}
	fams, err := af.families()
	if err != nil {
		return nil, fail("%w", err)
	}
	type key struct {
		f Family
		a netip.Addr
	}
	seen := map[key]bool{}
	for ti, t := range targets {
		if t == nil {
			return nil, fail("%w: target %d is nil", ErrInvalid, ti)
		}
		served := false
		for _, f := range fams {
			routes, err := t.listenRoutes(f)
			if err != nil {
				return nil, fail("target %d (%s): %w", ti, t.targetString(), err)
			}
			n := 0
			for _, r := range routes {
				for _, a := range r.listenAddrs() {
					b, err := r.BindIP(a, 0)
					if err != nil {
						return nil, fail("target %d (%s): %w", ti, t.targetString(), err)
					}
					n++
					k := key{f, b.Bound.Addr()}
					if !seen[k] {
						seen[k] = true
						p.addrs = append(p.addrs, b)
					}
				}
			}
			if n > 0 {
				served = true
			} else if errorOnAF && af != AnyFamily {
				return nil, fail("target %d (%s): %w: %v", ti, t.targetString(), ErrFamilyUnsupported, f)
			}
		}
		if !served && errorOnAF {
			return nil, fail("target %d (%s): %w: %v", ti, t.targetString(), ErrFamilyUnsupported, af)
		}
	}
	if len(p.addrs) == 0 {
		return nil, fail("%w: no target has an address of family %v", ErrFamilyUnsupported, af)
	}
	return p, nil
}

// PlanAll returns the listeners ListenAll would open for the same
// arguments, in the order it would open them, without binding anything. It
// applies the same checks, including ErrorOnAF and the MaxListeners guard
// (against the listeners the daemon holds now).
func (d *Daemon) PlanAll(targets []Target, ports Ports, protos []Proto, af Family) ([]Specific, error) {
	p, err := expand(targets, ports, protos, af, d.ErrorOnAF)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	have := len(d.listeners) + d.reserved
	d.mu.Unlock()
	if limit := d.maxListeners(); limit >= 0 && have+p.count() > limit {
		return nil, &LimitError{Op: "listen all", Want: p.count(), Have: have, Limit: limit}
	}
	return p.specifics(), nil
}

// ListenAll opens a listener for every combination of targets, ports,
// protocols and families (P2PD's listen_all) and returns them.
//
// Targets are *Interface, Route and RoutePool values (see [Target] for the
// addresses each binds). af is IPv4, IPv6 or AnyFamily, which means every
// family the target serves. A family a target does not serve is skipped; with
// Daemon.ErrorOnAF it is an error instead (for AnyFamily: a target that
// serves no family). A call that would bind nothing at all is an error
// wrapping ErrFamilyUnsupported. ports are single ports and inclusive ranges
// (see [Ports]); port 0 lets the OS choose, and the listener reports the port
// it got ([Pipe.LocalAddr], [Daemon.Lookup]).
//
// # How many listeners
//
// IPv6 is served twice, as P2PD's IPv6 note promises: on the route's global
// (or unique-local) address, reachable from outside, and on the interface's
// link-local address with its zone, reachable on the LAN. Where one of the
// two does not exist only the other is bound. The exact number of listeners
// is
//
//	targets × ports × protos × (IPv4 binds + 2 × IPv6 binds)
//
// where, per target, an IPv4 bind and an IPv6 bind are one route served in
// that family: 0 or 1 for an Interface (its first route, if it serves the
// family) and for a Route (its own family only), and the number of routes of
// that family for a RoutePool. The 2 is 1 for an IPv6 route without a
// link-local NIC IP. An address is never bound twice: when targets share
// an address (two routes of one interface share its link-local address; an
// interface and its own route share everything), the duplicates collapse and
// the count is lower, exactly the number of distinct (family, address) pairs
// × ports × protos. [Daemon.PlanAll] returns the exact list.
//
// P2PD's documentation counts its example (targets [an interface, a route],
// both dual-stack, ports [10000, [30000, 30100]], protos [TCP], any family)
// as 2 × 101 × 1 × 2 = 404. Exactly: the range 30000..30100 is inclusive, so
// the list holds 102 ports; a Route serves its own family only; and each
// IPv6 route is bound twice. With targets of different kinds the product is a
// sum over targets, ports × protos × Σ (IPv4 binds + 2 × IPv6 binds): for an
// interface and an IPv6 route of another interface that is
// 102 × 1 × ((1 + 2) + (0 + 2)) = 510 listeners; for two dual-stack
// interfaces, 2 × 102 × 1 × (1 + 2) = 612.
//
// # Guard and failures
//
// The count is computed and checked against Daemon.MaxListeners before
// anything is bound or the list is built; over the limit the call fails with
// a *LimitError that says how many listeners it would open. Bad ports are a
// *PortError (ErrBadPort), bad arguments wrap ErrInvalid, ErrBadFamily or
// ErrFamilyUnsupported, and nothing is bound.
//
// Binds that fail are collected into a *ListenError that lists each one as a
// *BindError (family, protocol, address, port, cause; ErrAddrInUse when the
// address is taken, also by this daemon). By default the call is all or
// nothing: on any failure it closes every listener it opened and returns
// only the error, leaving the daemon as it was. With Daemon.BestEffort it
// keeps and returns what it bound, with the *ListenError. When ctx ends or
// the daemon is closed during the call, it closes what it opened and returns
// the ctx error or ErrDaemonClosed.
//
// # Options
//
// opts are the call's own settings, as P2PD's listen_all(..., msg_cb,
// error_on_af) takes them: [MsgCB] gives the call's listeners a callback of
// their own, [ErrorOnAF], [BestEffort] and [Follow] override the Daemon's
// fields of those names for this call.
func (d *Daemon) ListenAll(ctx context.Context, targets []Target, ports Ports, protos []Proto, af Family, opts ...ListenOption) ([]*Pipe, error) {
	const op = "listen all"
	pol, err := d.begin(ctx, op, opts) // read once: a followed call keeps them
	if err != nil {
		return nil, err
	}
	planned := targets
	if pol.follow {
		planned = followTargets(targets)
	}
	p, err := expand(planned, ports, protos, af, pol.errorOnAF)
	if err != nil {
		return nil, err
	}
	n := p.count()
	if err := d.reserve(op, n); err != nil {
		return nil, err
	}
	defer d.release(n)
	ps, err := d.open(ctx, op, p.specifics(), pol)
	if pol.follow && len(ps) > 0 { // err == nil, or best effort kept some
		d.addFollow(targets, ports, protos, af, pol, ps)
	}
	return ps, err
}
