package reach

// What the Mapper asks of each family's gateway: which listeners, which
// protocol, which client, and how an epoch says the gateway forgot.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"
)

type side struct {
	family   p2pd.Family
	gwIP     netip.Addr // with its zone, when link-local
	lan      netip.Addr // this host's address toward it (IPv6: a global one)
	routeErr error      // why gwIP or lan is unknown
	chosen   string     // the protocol that maps here; "" until one has
	pickErr  error      // why no protocol mapped, until nextPick
	nextPick time.Time
	epochs   map[string]epochMark
	clients  map[string]gateway // by protocol and local address
}

func newSide(f p2pd.Family) *side {
	return &side{family: f, epochs: map[string]epochMark{}, clients: map[string]gateway{}}
}

// epochMark is a gateway's epoch when it last answered.
type epochMark struct {
	epoch uint32
	at    time.Time
}

func probeable(ip netip.Addr) bool {
	return !ip.IsLoopback() && !ip.IsLinkLocalUnicast()
}

func (m *Mapper) mappable(e p2pd.Endpoint) (*side, netip.AddrPort, bool) {
	if len(m.protos) == 0 || (e.Proto != p2pd.TCP && e.Proto != p2pd.UDP) {
		return nil, netip.AddrPort{}, false
	}
	ip := e.Local.Addr().Unmap()
	s := m.v4
	if e.Family == p2pd.IPv6 {
		s = m.v6
	}
	switch {
	case ip.IsUnspecified():
		ip = netip.Addr{} // the side's LAN address: mapOne
	case e.Family == p2pd.IPv4 && ip.IsPrivate():
	case e.Family == p2pd.IPv6 && ip.IsGlobalUnicast() && !ip.IsPrivate():
		ip = ip.WithZone("")
	default:
		return nil, netip.AddrPort{}, false // public IPv4, ULA, loopback, link-local: nothing to map
	}
	return s, netip.AddrPortFrom(ip, e.Local.Port()), true
}

func (m *Mapper) mapOne(ctx context.Context, s *side, proto p2pd.Proto, internal netip.AddrPort, prev *lease) (lease, error, bool) {
	if s.routeErr != nil {
		m.route(m) // the network may have come up
	}
	if s.routeErr != nil {
		return lease{}, errtext.Errorf("%w: %w", ErrNoMapping, s.routeErr), false
	}
	if !internal.Addr().IsValid() {
		internal = netip.AddrPortFrom(s.lan, internal.Port())
	}
	if s.chosen != "" {
		l, err := m.try(ctx, s, s.chosen, proto, internal, prev)
		if err == nil {
			return l, nil, m.epochCheck(s, l)
		}
		if !errors.Is(err, ErrNoGateway) {
			return lease{}, errtext.Errorf("%w: %w", ErrNoMapping, err), false
		}
		s.chosen = "" // it stopped answering: choose again
	}
	if s.pickErr != nil && time.Now().Before(s.nextPick) {
		return lease{}, s.pickErr, false
	}
	var errs []error
	for _, name := range m.protos {
		if name == "nat-pmp" && s.family == p2pd.IPv6 {
			continue // NAT-PMP is IPv4 only
		}
		l, err := m.try(ctx, s, name, proto, internal, prev)
		if err == nil {
			s.chosen, s.pickErr = name, nil
			return l, nil, m.epochCheck(s, l)
		}
		if ctx.Err() != nil {
			return lease{}, ctx.Err(), false
		}
		errs = append(errs, err)
	}
	s.pickErr = errtext.Errorf("%w from %v: %w", ErrNoMapping, s.gwIP, errors.Join(errs...))
	s.nextPick = time.Now().Add(m.refresh())
	return lease{}, s.pickErr, false
}

func (m *Mapper) try(ctx context.Context, s *side, name string, proto p2pd.Proto, internal netip.AddrPort, prev *lease) (lease, error) {
	g, err := m.client(ctx, s, name, internal.Addr())
	if err != nil {
		return lease{}, err
	}
	if prev != nil && prev.Protocol != name {
		prev = nil
	}
	want := internal.Port()
	if prev != nil {
		want = prev.External.Port()
	}
	rctx, cancel := context.WithTimeout(ctx, m.timeout())
	defer cancel()
	return g.Map(rctx, proto, internal, want, m.lifetime(), prev)
}

func (m *Mapper) epochCheck(s *side, l lease) bool {
	if l.Protocol == "upnp" {
		return false // no epoch: the renewal re-creates what was lost
	}
	mark, ok := s.epochs[l.Protocol]
	s.epochs[l.Protocol] = epochMark{epoch: l.Epoch, at: l.Granted}
	if ok && epochLost(mark.epoch, mark.at, l.Epoch, l.Granted) {
		m.log.Info("p2pd: reach: the gateway lost its mappings (its epoch went back): mapping again", "gateway", s.gwIP, "protocol", l.Protocol)
		m.mu.Lock()
		for _, st := range m.states {
			st.next = time.Time{}
		}
		m.mu.Unlock()
		return true
	}
	return false
}

func (m *Mapper) client(ctx context.Context, s *side, name string, local netip.Addr) (gateway, error) {
	key := name + " " + local.String()
	if name == "upnp" {
		s, key = m.v4, name
	}
	if g := s.clients[key]; g != nil {
		return g, nil
	}
	var g gateway
	switch name {
	case "pcp":
		g = newPCP(s.gwIP, local, m.timeout())
	case "nat-pmp":
		g = newPMP(s.gwIP, local, m.timeout())
	case "upnp":
		if s.routeErr != nil {
			return nil, &MapError{Protocol: name, Err: fmt.Errorf("%w: %w", ErrNoGateway, s.routeErr)}
		}
		u, err := newUPnP(ctx, s.lan, m.timeout())
		if err != nil {
			return nil, err
		}
		g = u
	}
	s.clients[key] = g
	return g, nil
}

func (m *Mapper) findRoute() {
	m.v4.find(m.cfg.Gateway.Unmap())
	m.v6.find(netip.Addr{})
}

func (s *side) find(gw netip.Addr) {
	index := 0
	if !gw.IsValid() {
		var err error
		if gw, index, err = defaultGateway(s.family); err != nil {
			s.routeErr = fmt.Errorf("no %v default gateway: %w", s.family, err)
			return
		}
	}
	var ifs []p2pd.Interface
	if index > 0 {
		if ifc, err := p2pd.InterfaceByIndex(index); err == nil {
			ifs = append(ifs, *ifc)
		}
	}
	if len(ifs) == 0 {
		all, err := p2pd.Interfaces()
		if err != nil {
			s.routeErr = err
			return
		}
		ifs = all
	}
	for _, ifc := range ifs {
		for _, a := range ifc.Addrs {
			ip := a.Addr
			if !a.Usable() || ip.Is4() != (s.family == p2pd.IPv4) {
				continue
			}
			if s.family == p2pd.IPv4 && a.Prefix().Masked().Contains(gw) ||
				s.family == p2pd.IPv6 && ip.IsGlobalUnicast() && !ip.IsPrivate() && a.Flags&p2pd.AddrTemporary == 0 {
				if gw.Is6() && gw.IsLinkLocalUnicast() && gw.Zone() == "" {
					gw = gw.WithZone(ifc.Name)
				}
				s.gwIP, s.lan, s.routeErr = gw, ip.WithZone(""), nil
				return
			}
		}
	}
	s.routeErr = fmt.Errorf("no address of this host to reach gateway %v from", gw)
}

func (m *Mapper) sideOf(l *lease) *side {
	if l.Internal.Addr().Is6() {
		return m.v6
	}
	return m.v4
}
