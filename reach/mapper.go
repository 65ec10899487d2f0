package reach

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"
	"github.com/p2pd/p2pd/internal/netns"
	"github.com/p2pd/p2pd/stun"
)

// Defaults of a Config.
const (
	DefaultLifetime = time.Hour        // the lease asked of the gateway
	DefaultTimeout  = 3 * time.Second  // bound of one request to the gateway (UPnP discovery takes about 2 s)
	DefaultRefresh  = 25 * time.Second // below the 30 s after which many NATs forget a UDP mapping
)

// Protocols a Mapper speaks, in the order it tries them by default.
var defaultProtocols = []string{"pcp", "nat-pmp", "upnp"}

// Config says what a Mapper asks, and of whom. The zero value maps every
// listener on the default gateways with whichever protocol they speak (a
// port mapping for IPv4, a pinhole in the firewall for IPv6), and asks no
// STUN server.
type Config struct {
	// Gateway is the router to ask for IPv4 mappings. Zero: the gateway of
	// the IPv4 default route (Linux; elsewhere it must be set). IPv6
	// pinholes are asked of the IPv6 default route's gateway (Linux only).
	Gateway netip.Addr

	// Protocols are the mapping protocols to try, in order, among "pcp"
	// (RFC 6887), "nat-pmp" (RFC 6886) and "upnp" (IGD v1 and v2). The
	// first that maps is used for every listener of the family (NAT-PMP
	// is IPv4 only). Nil: all three, in that order. Empty but not nil: no
	// port mapping (STUN only).
	Protocols []string

	// Lifetime is the lease asked for each mapping. Zero: DefaultLifetime.
	Lifetime time.Duration

	// Timeout bounds one request to the gateway or one STUN probe. Zero:
	// DefaultTimeout.
	Timeout time.Duration

	// Refresh is how often each listener's mapping is renewed and its STUN
	// mapping probed again: a gateway that restarted and forgot a mapping
	// has it back within Refresh. Zero: DefaultRefresh.
	Refresh time.Duration

	// STUN, when set, probes every UDP listener through its own socket
	// (stun.Resolver.Probe) with the resolver's servers.
	STUN *stun.Resolver

	// OnChange is called when a listener's external addresses change
	// (found, changed, lost), on the Mapper's goroutine. It may call any
	// method of the Mapper or the Daemon.
	OnChange func(Endpoint)
}

// Mapper keeps the listeners of a Daemon reachable from outside: it maps
// their ports on the gateway (IPv4 listeners on a private or wildcard
// address) or opens pinholes in its firewall (IPv6 listeners on a global
// address), renews the leases, follows the daemon's
// listeners as they come and go, and deletes the mappings on Close. It
// learns each UDP listener's own NAT mapping with STUN where Config.STUN
// says. Endpoints reports what it knows.
type Mapper struct {
	d      *p2pd.Daemon
	cfg    Config
	protos []string
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	states map[*p2pd.Pipe]*state // guarded by mu; the loop alone writes the states' fields under it

	// The loop's own.
	v4, v6 *side
	route  func(*Mapper) // finds both sides' gateways: findRoute
}

// side is the Mapper's view of one family's gateway.
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

type epochMark struct {
	epoch uint32
	at    time.Time
}

// state is what the Mapper knows of one listener.
type state struct {
	lease    *Lease
	leaseErr error
	stun     netip.AddrPort
	stunAt   time.Time
	stunErr  error
	next     time.Time // when to map and probe again
	ext      []External
}

// Start maps the listeners d has now, within ctx, and keeps at it in the
// background until Close: listeners opened later are mapped within a
// second, and those closed lose their mappings. It returns once the
// first round is done, whatever its outcome (see Endpoints for it):
// failing to map is not an error of Start. The error is for bad
// arguments.
func Start(ctx context.Context, d *p2pd.Daemon, c Config) (*Mapper, error) {
	return start(ctx, d, c, (*Mapper).findRoute)
}

// start is Start with the way the gateway is found (tests set fakes).
func start(ctx context.Context, d *p2pd.Daemon, c Config, route func(*Mapper)) (*Mapper, error) {
	switch {
	case ctx == nil:
		return nil, errtext.Errorf("p2pd: reach: start: %w: nil context", p2pd.ErrInvalid)
	case d == nil:
		return nil, errtext.Errorf("p2pd: reach: start: %w: nil Daemon", p2pd.ErrInvalid)
	case c.Gateway.IsValid() && !c.Gateway.Unmap().Is4():
		return nil, errtext.Errorf("p2pd: reach: start: %w: gateway %v is not IPv4", p2pd.ErrInvalid, c.Gateway)
	case c.Lifetime < 0 || c.Timeout < 0 || c.Refresh < 0:
		return nil, errtext.Errorf("p2pd: reach: start: %w: negative duration", p2pd.ErrInvalid)
	}
	protos := c.Protocols
	if protos == nil {
		protos = defaultProtocols
	}
	for _, p := range protos {
		if p != "pcp" && p != "nat-pmp" && p != "upnp" {
			return nil, errtext.Errorf("p2pd: reach: start: %w: protocol %q", p2pd.ErrInvalid, p)
		}
	}
	m := &Mapper{d: d, cfg: c, protos: protos, log: cmp.Or(d.Logger, slog.Default()),
		done: make(chan struct{}), states: map[*p2pd.Pipe]*state{},
		v4: newSide(p2pd.IPv4), v6: newSide(p2pd.IPv6)}
	ns, err := netns.Current()
	if err != nil {
		return nil, errtext.Errorf("p2pd: reach: start: %w", err)
	}
	m.route = route
	m.route(m)
	m.round(ctx) // bounded by ctx, and each request by Timeout
	loopCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.loop(loopCtx, ns)
	return m, nil
}

func (m *Mapper) lifetime() time.Duration { return cmp.Or(m.cfg.Lifetime, DefaultLifetime) }
func (m *Mapper) timeout() time.Duration  { return cmp.Or(m.cfg.Timeout, DefaultTimeout) }
func (m *Mapper) refresh() time.Duration  { return cmp.Or(m.cfg.Refresh, DefaultRefresh) }

// Close stops the Mapper at once; its goroutine then deletes every
// mapping it made (each request bounded by Timeout) and ends. It never
// waits: Shutdown does. Calling it again does nothing.
func (m *Mapper) Close() error {
	m.cancel()
	return nil
}

// Shutdown closes the Mapper and waits, within ctx, until its mappings
// are deleted and its goroutine has ended.
func (m *Mapper) Shutdown(ctx context.Context) error {
	if ctx == nil {
		return errtext.Errorf("p2pd: reach: shutdown: %w: nil context", p2pd.ErrInvalid)
	}
	m.Close()
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return errtext.Errorf("p2pd: reach: shutdown: %w", ctx.Err())
	}
}

// Endpoints lists every listener of the daemon (in the order of
// Daemon.Listeners) with the addresses the world reaches it at, best
// first: a port mapping, the listener's public address, its STUN mapping.
func (m *Mapper) Endpoints() []Endpoint {
	eps := m.d.Endpoints()
	out := make([]Endpoint, len(eps))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, e := range eps {
		out[i] = m.endpointLocked(e)
	}
	return out
}

func (m *Mapper) endpointLocked(e p2pd.Endpoint) Endpoint {
	ep := Endpoint{Endpoint: e}
	if e.Ext.IsValid() && e.Ext == e.Local {
		ep.External = append(ep.External, External{Addr: e.Ext, Source: SourcePublic})
	}
	s := m.states[e.Pipe]
	if s == nil {
		return ep
	}
	if l := s.lease; l != nil {
		x := External{Addr: l.External, Source: SourceMapping, Protocol: l.Protocol, Updated: l.Granted}
		if l.Lifetime > 0 {
			x.Expires = l.Granted.Add(l.Lifetime)
		}
		// A pinhole is the public address itself, now open: said once.
		ep.External = slices.DeleteFunc(ep.External, func(p External) bool { return p.Addr == x.Addr })
		ep.External = append([]External{x}, ep.External...)
	}
	if s.stun.IsValid() {
		ep.External = append(ep.External, External{Addr: s.stun, Source: SourceSTUN, Updated: s.stunAt})
	}
	ep.Err = errors.Join(s.leaseErr, s.stunErr)
	return ep
}

// loop runs in the network namespace of Start's caller, as the daemon's
// listeners do: the gateway is the one they are behind.
func (m *Mapper) loop(ctx context.Context, ns *netns.NS) {
	defer close(m.done)
	defer ns.Close()
	if ns.Foreign() {
		// The thread enters the namespace for good: locked to this
		// goroutine, it exits with it and is never reused.
		runtime.LockOSThread()
		if err := ns.Enter(); err != nil {
			m.log.Error("p2pd: reach: cannot enter the daemon's network namespace: mapping stopped", "err", err)
			<-ctx.Done()
			return
		}
	}
	tick := time.NewTicker(min(time.Second, m.refresh()))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			m.unmapAll()
			return
		case <-tick.C:
			m.round(ctx)
		}
	}
}

// round follows the daemon's listeners: new ones are mapped and probed,
// due ones renewed, gone ones unmapped.
func (m *Mapper) round(ctx context.Context) {
	eps := m.d.Endpoints()
	live := make(map[*p2pd.Pipe]bool, len(eps))
	for _, e := range eps {
		live[e.Pipe] = true
	}
	m.mu.Lock()
	var gone []*Lease
	for p, s := range m.states {
		if !live[p] {
			if s.lease != nil {
				gone = append(gone, s.lease)
			}
			delete(m.states, p)
		}
	}
	m.mu.Unlock()
	for _, l := range gone {
		m.unmap(l)
	}
	for again := true; again && ctx.Err() == nil; {
		again = false
		for _, e := range eps {
			if ctx.Err() != nil {
				return
			}
			if m.visit(ctx, e) {
				again = true // a gateway lost its mappings: every lease again
			}
		}
	}
}

// visit maps and probes one listener when due, and reports a change. It
// returns true when the gateway's epoch says it lost every mapping.
func (m *Mapper) visit(ctx context.Context, e p2pd.Endpoint) (lost bool) {
	now := time.Now()
	m.mu.Lock()
	s := m.states[e.Pipe]
	if s == nil {
		s = &state{}
		m.states[e.Pipe] = s
	}
	due := !now.Before(s.next)
	prev := s.lease
	m.mu.Unlock()
	if !due {
		return false
	}
	var lease *Lease
	var leaseErr error
	if sd, internal, ok := m.mappable(e); ok {
		l, err, gone := m.mapOne(ctx, sd, e.Proto, internal, prev)
		lost, leaseErr = gone, err
		switch {
		case err == nil:
			lease = &l
		case prev != nil && (prev.Lifetime == 0 || now.Before(prev.Granted.Add(prev.Lifetime))):
			lease = prev // not renewed, but not expired: reported (Updated says how old) and deleted on Close
		}
	}
	var stunAddr netip.AddrPort
	var stunErr error
	if r := m.cfg.STUN; r != nil && e.Proto == p2pd.UDP {
		pctx, cancel := context.WithTimeout(ctx, m.timeout())
		stunAddr, stunErr = r.Probe(pctx, e.Pipe)
		cancel()
	}
	m.mu.Lock()
	if m.states[e.Pipe] != s {
		m.mu.Unlock()
		if lease != nil {
			m.unmap(lease) // the listener went while it was being mapped
		}
		return lost
	}
	s.lease, s.leaseErr = lease, leaseErr
	if stunErr == nil && stunAddr.IsValid() {
		s.stunAt = time.Now()
	}
	s.stun, s.stunErr = stunAddr, stunErr
	s.next = now.Add(m.refresh())
	ep := m.endpointLocked(e)
	changed := !equalExternal(ep.External, s.ext)
	s.ext = ep.External
	m.mu.Unlock()
	if changed {
		m.changed(ep)
	}
	return lost
}

func (m *Mapper) changed(ep Endpoint) {
	f := m.cfg.OnChange
	if f == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("p2pd: reach: panic in OnChange (recovered)", "panic", r)
		}
	}()
	f(ep)
}

// mappable says whether a listener gets a port mapping, on which side, and
// its internal address: IPv4 TCP and UDP listeners on a private or
// wildcard address, and IPv6 ones on a global address (a pinhole).
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

// mapOne maps (or renews) one listener with its side's protocol, choosing
// it first if need be.
func (m *Mapper) mapOne(ctx context.Context, s *side, proto p2pd.Proto, internal netip.AddrPort, prev *Lease) (Lease, error, bool) {
	if s.routeErr != nil {
		m.route(m) // the network may have come up
	}
	if s.routeErr != nil {
		return Lease{}, errtext.Errorf("%w: %w", ErrNoMapping, s.routeErr), false
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
			return Lease{}, errtext.Errorf("%w: %w", ErrNoMapping, err), false
		}
		s.chosen = "" // it stopped answering: choose again
	}
	if s.pickErr != nil && time.Now().Before(s.nextPick) {
		return Lease{}, s.pickErr, false
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
			return Lease{}, ctx.Err(), false
		}
		errs = append(errs, err)
	}
	s.pickErr = errtext.Errorf("%w from %v: %w", ErrNoMapping, s.gwIP, errors.Join(errs...))
	s.nextPick = time.Now().Add(m.refresh())
	return Lease{}, s.pickErr, false
}

// try asks the protocol's client, renewing prev only when it made it.
func (m *Mapper) try(ctx context.Context, s *side, name string, proto p2pd.Proto, internal netip.AddrPort, prev *Lease) (Lease, error) {
	g, err := m.client(ctx, s, name, internal.Addr())
	if err != nil {
		return Lease{}, err
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

// epochCheck notes the gateway's epoch and reports whether it shows that
// the gateway lost its mappings since the last answer.
func (m *Mapper) epochCheck(s *side, l Lease) bool {
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

// client returns the protocol's client for the side's gateway. PCP and
// NAT-PMP map for the address a request comes from, so theirs are made per
// local address (they keep no state); UPnP's, found over IPv4, serves both
// sides.
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

// findRoute learns both families' gateways and this host's address toward
// each.
func (m *Mapper) findRoute() {
	m.v4.find(m.cfg.Gateway.Unmap())
	m.v6.find(netip.Addr{})
}

// find learns the side's gateway (gw when given, else the default route's)
// and this host's address toward it: on its subnet for IPv4, a global
// address of the interface toward it for IPv6.
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

// sideOf is the side a lease was made on.
func (m *Mapper) sideOf(l *Lease) *side {
	if l.Internal.Addr().Is6() {
		return m.v6
	}
	return m.v4
}

// unmap deletes a lease, within Timeout.
func (m *Mapper) unmap(l *Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout())
	defer cancel()
	g, err := m.client(ctx, m.sideOf(l), l.Protocol, l.Internal.Addr())
	if err != nil {
		return
	}
	if err := g.Unmap(ctx, *l); err != nil {
		m.log.Debug("p2pd: reach: delete mapping", "external", l.External, "err", err)
	}
}

// unmapAll deletes every lease, on Close.
func (m *Mapper) unmapAll() {
	m.mu.Lock()
	var ls []*Lease
	for p, s := range m.states {
		if s.lease != nil {
			ls = append(ls, s.lease)
		}
		delete(m.states, p)
	}
	m.mu.Unlock()
	for _, l := range ls {
		m.unmap(l)
	}
}

var errNoDefault = errors.New("no default route with a gateway")
