package reach

import (
	"cmp"
	"context"
	"errors"
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
// state is what the Mapper knows of one listener.
type state struct {
	lease    *lease
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
	m.forget(func(p *p2pd.Pipe) bool { return !live[p] })
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
	var lease *lease
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
	if r := m.cfg.STUN; r != nil && e.Proto == p2pd.UDP && probeable(e.Local.Addr()) {
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
	if lease != nil && lease.Lifetime > 0 && lease.Lifetime/2 < m.refresh() {
		s.next = now.Add(lease.Lifetime / 2) // renewed before the gateway's lease ends, however short it granted
	}
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

// probeable says whether a UDP listener's address can reach a STUN server
// outside: not loopback or link-local.
// mappable says whether a listener gets a port mapping, on which side, and
// its internal address: IPv4 TCP and UDP listeners on a private or
// wildcard address, and IPv6 ones on a global address (a pinhole).
// mapOne maps (or renews) one listener with its side's protocol, choosing
// it first if need be.
// try asks the protocol's client, renewing prev only when it made it.
// epochCheck notes the gateway's epoch and reports whether it shows that
// the gateway lost its mappings since the last answer.
// client returns the protocol's client for the side's gateway. PCP and
// NAT-PMP map for the address a request comes from, so theirs are made per
// local address (they keep no state); UPnP's, found over IPv4, serves both
// sides.
// findRoute learns both families' gateways and this host's address toward
// each.
// find learns the side's gateway (gw when given, else the default route's)
// and this host's address toward it: on its subnet for IPv4, a global
// address of the interface toward it for IPv6.
// sideOf is the side a lease was made on.
// unmap deletes a lease, within Timeout.
func (m *Mapper) unmap(l *lease) {
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
func (m *Mapper) unmapAll() { m.forget(func(*p2pd.Pipe) bool { return true }) }

// forget drops the listeners gone says are gone, and deletes their leases.
func (m *Mapper) forget(gone func(*p2pd.Pipe) bool) {
	m.mu.Lock()
	var ls []*lease
	for p, s := range m.states {
		if gone(p) {
			if s.lease != nil {
				ls = append(ls, s.lease)
			}
			delete(m.states, p)
		}
	}
	m.mu.Unlock()
	for _, l := range ls {
		m.unmap(l)
	}
}

var errNoDefault = errors.New("no default route with a gateway")
