package p2pd

import (
	"fmt"
	"net/netip"
)

// Endpoint is where one listener of a daemon can be reached: its local
// address and, where known, the address the outside world reaches it at.
type Endpoint struct {
	Proto  Proto
	Family Family
	Local  netip.AddrPort // the bound address and real port; IPv6 link-local with its zone

	// ExtIP is the external IP of the listener's address: the listener's
	// route's EXT IP (see [Interface.Resolve]), or the address itself when
	// it is public. Invalid when unknown, and for loopback, link-local and
	// wildcard listeners without an EXT IP.
	ExtIP netip.Addr

	// Ext is ExtIP with the port the world reaches the listener at. It is
	// set only when that port is known to be the local port: the listener's
	// address is its own EXT IP (a public address, no NAT). Behind a NAT
	// the external port depends on the NAT (a port forwarding, a 1:1 NAT)
	// and p2pd cannot see it, so Ext stays invalid while ExtIP is set.
	Ext netip.AddrPort

	Pipe *Pipe // the listener
}

// String describes e, e.g. "TCP IPv4 10.0.0.2:7007 ext 203.0.113.1:?".
func (e Endpoint) String() string {
	s := fmt.Sprintf("%v %v %v", e.Proto, e.Family, e.Local)
	switch {
	case e.Ext.IsValid():
		s += " ext " + e.Ext.String()
	case e.ExtIP.IsValid():
		h := e.ExtIP.String()
		if e.ExtIP.Is6() {
			h = "[" + h + "]"
		}
		s += " ext " + h + ":?" // port unknown
	}
	return s
}

// Endpoints lists, for every listener of the daemon (in the order of
// [Daemon.Listeners]), its local address and what is known of its external
// address. Nothing is asked of the network: the EXT IPs come from the routes
// the listeners were opened on, so resolve an interface (Interface.Resolve
// with the STUN resolver of package github.com/p2pd/p2pd/stun) before
// passing it to ListenAll for them to be known.
func (d *Daemon) Endpoints() []Endpoint {
	ls := d.Listeners()
	out := make([]Endpoint, 0, len(ls))
	for _, p := range ls {
		out = append(out, endpointOf(p))
	}
	return out
}

func endpointOf(p *Pipe) Endpoint {
	local := p.LocalAddr()
	r := p.Route()
	e := Endpoint{Proto: p.Proto(), Family: p.Family(), Local: local, Pipe: p}
	ip := local.Addr()
	switch ScopeOf(ip) {
	case ScopeLoopback, ScopeLinkLocal:
		return e // reached from this host or this link only
	case ScopeGlobal:
		// A public address is its own EXT IP, reached on the same port.
		e.ExtIP, e.Ext = ip.WithZone(""), netip.AddrPortFrom(ip.WithZone(""), local.Port())
		return e
	}
	ext := r.ExtAddr()
	if !ext.IsValid() {
		return e
	}
	// A private (or wildcard) listener: the route's EXT IP, if it has one.
	e.ExtIP = ext
	if r.HasNIC(ext) {
		// The route maps one of its NIC IPs to itself: no NAT.
		e.Ext = netip.AddrPortFrom(ext, local.Port())
	}
	return e
}
