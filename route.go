package p2pd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Route is one way an interface reaches the network in one family: the
// interface's own addresses that serve it (NIC IPs) and the addresses the
// outside world sees them as (EXT IPs). It is P2PD's Route.
//
// For IPv4, NIC IPs are grouped: every private NIC IP that maps to the same
// external address (or whose external address is unknown) shares one route; a
// public NIC IP is a route of its own and is its own EXT IP.
//
// For IPv6, every global or unique-local address is a route of its own, and the
// interface's link-local addresses (with their zone) follow it in NIC, so each
// route can be served on the LAN and from outside. A global address is its own
// EXT IP.
//
// A Route is a value; Bind returns a bound copy. The slices are shared between
// copies: treat them as read-only.
type Route struct {
	Family    Family         `json:"af"`
	Interface string         `json:"interface,omitempty"` // name of the interface; zone of link-local NIC IPs
	NIC       []netip.Addr   `json:"nic_ips"`
	Ext       []netip.Addr   `json:"ext_ips"`
	Bound     netip.AddrPort `json:"bound,omitzero"` // set by Bind; the zero value means unbound
}

// IsBound reports whether r was made by Bind.
func (r Route) IsBound() bool { return r.Bound.IsValid() }

// Addr returns the address a route binds to by default: for IPv4 its first NIC
// IP, for IPv6 its first NIC IP that is not link-local (else its first
// link-local). It is invalid when the route has no NIC IP.
func (r Route) Addr() netip.Addr {
	if r.Family == IPv6 {
		for _, a := range r.NIC {
			if !a.IsLinkLocalUnicast() {
				return a
			}
		}
	}
	if len(r.NIC) > 0 {
		return r.NIC[0]
	}
	return netip.Addr{}
}

// LinkLocal returns the route's first IPv6 link-local NIC IP, with its zone, or
// an invalid address when it has none.
func (r Route) LinkLocal() netip.Addr {
	for _, a := range r.NIC {
		if a.Is6() && a.IsLinkLocalUnicast() {
			return a
		}
	}
	return netip.Addr{}
}

// ExtAddr returns the route's first EXT IP, or an invalid address when the
// external address is unknown.
func (r Route) ExtAddr() netip.Addr {
	if len(r.Ext) > 0 {
		return r.Ext[0]
	}
	return netip.Addr{}
}

// HasNIC reports whether ip is one of the route's NIC IPs. Zones are ignored.
func (r Route) HasNIC(ip netip.Addr) bool {
	ip = ip.WithZone("")
	for _, a := range r.NIC {
		if a.WithZone("") == ip {
			return true
		}
	}
	return false
}

// Bind returns a copy of r bound to host and port. Host is one of:
//
//	""           the route's default address (see [Route.Addr])
//	"*"          the family's wildcard (0.0.0.0 or ::)
//	"localhost"  the family's loopback (127.0.0.1 or ::1)
//	an IP        one of the route's NIC IPs, as [Route.BindIP] takes it
//
// Port 0 lets the operating system choose when the route is opened. A bound
// route passed to Bind is bound anew; its old address is ignored.
func (r Route) Bind(host string, port uint16) (Route, error) {
	var ip netip.Addr
	switch host {
	case "":
		if ip = r.Addr(); !ip.IsValid() {
			return Route{}, errorf("p2pd: bind %s route on %q: %w", r.Family, r.Interface, ErrNoAddress)
		}
	case "*":
		if err := r.checkFamily(); err != nil {
			return Route{}, err
		}
		r.Bound = netip.AddrPortFrom(r.Family.wildcard(), port)
		return r, nil
	case "localhost":
		if err := r.checkFamily(); err != nil {
			return Route{}, err
		}
		r.Bound = netip.AddrPortFrom(r.Family.loopback(), port)
		return r, nil
	default:
		var err error
		if ip, err = netip.ParseAddr(host); err != nil {
			return Route{}, errorf("p2pd: bind %q: %w: not \"\", \"*\", \"localhost\" or an IP", host, ErrInvalid)
		}
	}
	return r.BindIP(ip, port)
}

// BindIP returns a copy of r bound to ip and port. The ip must be one of the
// route's NIC IPs and of the route's family. An IPv6 link-local ip without a
// zone gets the route's interface as its zone; one with another zone is an
// error.
func (r Route) BindIP(ip netip.Addr, port uint16) (Route, error) {
	if err := r.checkFamily(); err != nil {
		return Route{}, err
	}
	if r.Family == IPv4 && ip.Is4In6() {
		ip = ip.Unmap()
	}
	if FamilyOf(ip) != r.Family {
		return Route{}, &AddrError{Op: "bind", Addr: ip, Err: fmt.Errorf("%w: %s route", ErrFamilyUnsupported, r.Family)}
	}
	if !r.HasNIC(ip) {
		return Route{}, &AddrError{Op: "bind", Addr: ip, Err: ErrAddrNotOnRoute}
	}
	if ip.Is6() && ip.IsLinkLocalUnicast() {
		switch ip.Zone() {
		case "":
			if r.Interface == "" {
				return Route{}, &AddrError{Op: "bind", Addr: ip, Err: fmt.Errorf("%w: link-local address needs a zone and the route names no interface", ErrInvalid)}
			}
			ip = ip.WithZone(r.Interface)
		case r.Interface:
		default:
			return Route{}, &AddrError{Op: "bind", Addr: ip, Err: fmt.Errorf("%w: zone is not interface %q", ErrAddrNotOnRoute, r.Interface)}
		}
	} else {
		ip = ip.WithZone("")
	}
	r.Bound = netip.AddrPortFrom(ip, port)
	return r, nil
}

// bound is the route a pipe on r binds, as Listen and Dial take it: r if
// it is bound, else r bound to its default address with port 0 (r.Bind("",
// 0)), which fails with an error wrapping ErrNoAddress for a route with no
// NIC IP, the zero Route included. A route's family, unless AnyFamily, must
// be valid and its bound address's.
func (r Route) bound() (Route, error) {
	if r.Family != AnyFamily {
		if err := r.checkFamily(); err != nil {
			return Route{}, err
		}
	}
	if !r.IsBound() {
		return r.Bind("", 0)
	}
	if a := r.Bound.Addr(); r.Family != AnyFamily && FamilyOf(a) != r.Family {
		return Route{}, fmt.Errorf("%w: %v on an %v route", ErrFamilyUnsupported, a, r.Family)
	}
	return r, nil
}

func (r Route) checkFamily() error {
	if r.Family != IPv4 && r.Family != IPv6 {
		return fmt.Errorf("%w: %s route", ErrBadFamily, r.Family)
	}
	return nil
}

// String describes r, e.g. "IPv4 eth0 nic=[192.168.1.5] ext=[203.0.113.7]".
func (r Route) String() string {
	s := fmt.Sprintf("%s %s nic=%v ext=%v", r.Family, r.Interface, r.NIC, r.Ext)
	if r.IsBound() {
		s += " bound=" + r.Bound.String()
	}
	return s
}

// validate checks a route read from outside (JSON).
func (r Route) validate() error {
	if err := r.checkFamily(); err != nil {
		return err
	}
	if len(r.NIC) == 0 {
		return errorf("p2pd: route: %w: no NIC IPs", ErrInvalid)
	}
	for _, list := range [][]netip.Addr{r.NIC, r.Ext} {
		for _, a := range list {
			if FamilyOf(a) != r.Family || a.Is4In6() {
				return errorf("p2pd: route: %w: %v in an %s route", ErrInvalid, a, r.Family)
			}
			if a.Zone() != "" && (!a.IsLinkLocalUnicast() || a.Zone() != r.Interface) {
				return errorf("p2pd: route: %w: zone of %v", ErrInvalid, a)
			}
		}
	}
	if r.IsBound() {
		if b := r.Bound.Addr(); FamilyOf(b) != r.Family || b.Is4In6() || (b.Zone() != "" && !b.IsLinkLocalUnicast()) {
			return errorf("p2pd: route: %w: bound %v in an %s route", ErrInvalid, r.Bound, r.Family)
		}
	}
	return nil
}

// RoutePool is the list of an interface's routes in one family, in the order
// the interface lists their addresses. It is a slice: len counts it, an index
// picks one, range iterates it.
type RoutePool []Route

// First returns the first route of the pool.
func (p RoutePool) First() (Route, error) {
	if len(p) == 0 {
		return Route{}, ErrNoRoute
	}
	return p[0], nil
}

// Locate returns the route that holds ip as a NIC IP or an EXT IP.
func (p RoutePool) Locate(ip netip.Addr) (Route, bool) {
	ip = ip.WithZone("")
	for _, r := range p {
		if r.HasNIC(ip) || slices.Contains(r.Ext, ip) {
			return r, true
		}
	}
	return Route{}, false
}

// ExtResolver finds the address the outside world sees for traffic sent from
// one of an interface's private addresses (the EXT IP behind a NAT). A STUN
// client (package github.com/p2pd/p2pd/stun) is the usual implementation.
// It returns an invalid address and an error wrapping ErrExtUnknown when it
// cannot tell; it never invents one.
type ExtResolver interface {
	ExtAddr(ctx context.Context, iface *Interface, nic netip.Addr) (netip.Addr, error)
}

// OfflineResolver is the default ExtResolver: it knows no external address.
type OfflineResolver struct{}

// ExtAddr always returns ErrExtUnknown.
func (OfflineResolver) ExtAddr(context.Context, *Interface, netip.Addr) (netip.Addr, error) {
	return netip.Addr{}, ErrExtUnknown
}

// buildRoutes makes the route pools of an interface from its usable addresses.
// A resolver error other than ErrExtUnknown is returned with the routes built
// so far discarded.
func buildRoutes(ctx context.Context, ifc *Interface, res ExtResolver) (v4, v6 RoutePool, err error) {
	var lls []netip.Addr
	for _, a := range ifc.Addrs {
		if a.Addr.Is6() && a.Addr.IsLinkLocalUnicast() && a.servable() {
			lls = append(lls, a.Addr)
		}
	}
	_, offline := res.(OfflineResolver)
	ext := func(nic netip.Addr) (netip.Addr, error) {
		global := ScopeOf(nic) == ScopeGlobal
		if global && offline {
			return nic, nil
		}
		// A public address is checked too (it may sit behind a 1:1 NAT or
		// NPTv6); when the resolver cannot tell, it maps to itself.
		e, err := res.ExtAddr(ctx, ifc, nic)
		if err != nil {
			if errors.Is(err, ErrExtUnknown) {
				if global {
					return nic, nil
				}
				return netip.Addr{}, nil
			}
			return netip.Addr{}, errorf("p2pd: external address of %v on %s: %w", nic, ifc.Name, err)
		}
		if e.IsValid() && (FamilyOf(e) != FamilyOf(nic) || e.Is4In6() || e.Zone() != "") {
			return netip.Addr{}, errorf("p2pd: external address of %v on %s: %w: resolver gave %v", nic, ifc.Name, ErrInvalid, e)
		}
		return e, nil
	}
	// IPv4: group by external address; unknown ones share one route.
	groups := map[netip.Addr]int{} // ext -> index in v4
	for _, a := range ifc.Addrs {
		if !a.Addr.Is4() || !a.servable() {
			continue
		}
		e, err := ext(a.Addr)
		if err != nil {
			return nil, nil, err
		}
		if i, ok := groups[e]; ok && ScopeOf(a.Addr) != ScopeGlobal {
			v4[i].NIC = append(v4[i].NIC, a.Addr)
			continue
		}
		r := Route{Family: IPv4, Interface: ifc.Name, NIC: []netip.Addr{a.Addr}}
		if e.IsValid() {
			r.Ext = []netip.Addr{e}
		}
		if ScopeOf(a.Addr) != ScopeGlobal {
			groups[e] = len(v4)
		}
		v4 = append(v4, r)
	}
	// IPv6: one route per non-link-local address, link-locals copied into each.
	for _, a := range ifc.Addrs {
		if !a.Addr.Is6() || a.Addr.IsLinkLocalUnicast() || !a.servable() {
			continue
		}
		e, err := ext(a.Addr)
		if err != nil {
			return nil, nil, err
		}
		r := Route{Family: IPv6, Interface: ifc.Name, NIC: append([]netip.Addr{a.Addr}, lls...)}
		if e.IsValid() {
			r.Ext = []netip.Addr{e}
		}
		v6 = append(v6, r)
	}
	return v4, v6, nil
}
