package reach

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
)

// fakeGateway is a gateway for the Mapper's logic: it maps internal port
// p to external port p+10000 on 203.0.113.1, and can refuse, go silent or
// lose its mappings.
type fakeGateway struct {
	name  string
	mu    sync.Mutex
	maps  map[string]lease // by proto/internal
	fail  error            // every Map fails with it
	epoch uint32
	calls int
}

func newFake(name string) *fakeGateway {
	return &fakeGateway{name: name, maps: map[string]lease{}, epoch: 1000}
}

func (f *fakeGateway) Protocol() string { return f.name }

func key(proto p2pd.Proto, a netip.AddrPort) string { return fmt.Sprint(proto, a) }

func (f *fakeGateway) Map(ctx context.Context, proto p2pd.Proto, internal netip.AddrPort, want uint16, lifetime time.Duration, prev *lease) (lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return lease{}, &MapError{Protocol: f.name, Err: f.fail}
	}
	f.epoch++
	l := lease{Protocol: f.name, Proto: proto, Internal: internal, Lifetime: lifetime, Granted: time.Now(), Epoch: f.epoch,
		External: netip.AddrPortFrom(netip.MustParseAddr("203.0.113.1"), internal.Port()+10000)}
	f.maps[key(proto, internal)] = l
	return l, nil
}

func (f *fakeGateway) Unmap(ctx context.Context, l lease) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.maps, key(l.Proto, l.Internal))
	return nil
}

// restart forgets every mapping and starts the epoch again.
func (f *fakeGateway) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maps = map[string]lease{}
	f.epoch = 0
}

func (f *fakeGateway) mapped() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.maps {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// fakeRoute makes the Mapper see gateway 10.0.0.1 from 10.0.0.2 with the
// given protocol clients.
func fakeRoute(gs ...*fakeGateway) func(*Mapper) {
	return func(m *Mapper) {
		m.v4.gwIP, m.v4.lan, m.v4.routeErr = netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), nil
		m.v6.routeErr = errNoDefault
		for _, g := range gs {
			key := g.name + " " + m.v4.lan.String()
			if g.name == "upnp" {
				key = g.name
			}
			m.v4.clients[key] = g
		}
	}
}

// wildcardDaemon is a daemon with TCP and UDP listeners on 0.0.0.0, port 0:
// the Mapper maps them as the LAN address 10.0.0.2.
func wildcardDaemon(t *testing.T) *p2pd.Daemon {
	t.Helper()
	d := &p2pd.Daemon{WatchInterval: -1}
	t.Cleanup(func() { d.Close() })
	any4, err := (p2pd.Route{Family: p2pd.IPv4}).Bind("*", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
		if _, err := d.AddListener(context.Background(), proto, any4); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMapperFollows: the first protocol that maps is used; listeners that
// come and go gain and lose mappings; Shutdown deletes the rest.
func TestMapperFollows(t *testing.T) {
	d := wildcardDaemon(t)
	pcp, pmp := newFake("pcp"), newFake("nat-pmp")
	pcp.fail = fmt.Errorf("%w: port unreachable", ErrNoGateway)
	var mu sync.Mutex
	var changes []Endpoint
	m, err := start(context.Background(), d, Config{Refresh: 50 * time.Millisecond, OnChange: func(e Endpoint) {
		mu.Lock()
		changes = append(changes, e)
		mu.Unlock()
	}}, fakeRoute(pcp, pmp))
	if err != nil {
		t.Fatal(err)
	}
	eps := m.Endpoints()
	if len(eps) != 2 {
		t.Fatalf("%d endpoints", len(eps))
	}
	for _, e := range eps {
		if e.Err != nil || len(e.External) != 1 || e.External[0].Source != SourceMapping || e.External[0].Protocol != "nat-pmp" ||
			e.External[0].Addr.Port() != e.Local.Port()+10000 || e.External[0].Expires.IsZero() {
			t.Errorf("endpoint %v: %+v, err %v", e, e.External, e.Err)
		}
		t.Log(e)
	}
	if got := len(pmp.mapped()); got != 2 {
		t.Fatalf("gateway has %d mappings, want 2", got)
	}
	mu.Lock()
	if len(changes) != 2 {
		t.Errorf("%d change events, want 2", len(changes))
	}
	mu.Unlock()

	// A listener that goes loses its mapping; a new one gets one.
	first := d.Listeners()[0]
	first.Close()
	waitUntil(t, "unmapped", func() bool { return len(pmp.mapped()) == 1 })
	any4, _ := (p2pd.Route{Family: p2pd.IPv4}).Bind("*", 0)
	if _, err := d.AddListener(context.Background(), first.Proto(), any4); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "mapped again", func() bool { return len(pmp.mapped()) == 2 })

	// The gateway restarts: its epoch goes back, and the Mapper maps
	// everything again at the next renewal.
	pmp.restart()
	waitUntil(t, "restored", func() bool { return len(pmp.mapped()) == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pmp.mapped(); len(got) != 0 {
		t.Fatalf("after Shutdown the gateway still has %v", got)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// TestMapperNoGateway: a gateway that speaks nothing gives ErrNoMapping in
// every endpoint, with each protocol's error, and Start returns at once.
func TestMapperNoGateway(t *testing.T) {
	d := wildcardDaemon(t)
	var gs []*fakeGateway
	for _, n := range defaultProtocols {
		g := newFake(n)
		g.fail = fmt.Errorf("%w: silence", ErrNoGateway)
		gs = append(gs, g)
	}
	m, err := start(context.Background(), d, Config{}, fakeRoute(gs...))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, e := range m.Endpoints() {
		var me *MapError
		if !errors.Is(e.Err, ErrNoMapping) || !errors.Is(e.Err, ErrNoGateway) || !errors.As(e.Err, &me) || len(e.External) != 0 {
			t.Errorf("%v: err %v", e, e.Err)
		}
	}
	// The protocols are asked once per Refresh, not once per listener.
	for _, g := range gs {
		if g.calls != 1 {
			t.Errorf("%s asked %d times, want 1", g.name, g.calls)
		}
	}
}

// TestMapperCallbackCloses: OnChange may call Endpoints and Close.
func TestMapperCallbackCloses(t *testing.T) {
	d := wildcardDaemon(t)
	var mp atomic.Pointer[Mapper]
	var once sync.Once
	closed := make(chan struct{})
	m, err := start(context.Background(), d, Config{Refresh: 20 * time.Millisecond, OnChange: func(e Endpoint) {
		if m := mp.Load(); m != nil {
			once.Do(func() {
				m.Endpoints()
				m.Close()
				close(closed)
			})
		}
	}}, fakeRoute(newFake("pcp")))
	if err != nil {
		t.Fatal(err)
	}
	mp.Store(m)
	any4, _ := (p2pd.Route{Family: p2pd.IPv4}).Bind("*", 0)
	if _, err := d.AddListener(context.Background(), p2pd.UDP, any4); err != nil { // a change, on the loop's goroutine
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("no change event")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStartErrors(t *testing.T) {
	d := &p2pd.Daemon{}
	defer d.Close()
	ctx := context.Background()
	for _, c := range []struct {
		name string
		ctx  context.Context
		d    *p2pd.Daemon
		cfg  Config
	}{
		{"nil context", nil, d, Config{}},
		{"nil daemon", ctx, nil, Config{}},
		{"IPv6 gateway", ctx, d, Config{Gateway: netip.MustParseAddr("fe80::1")}},
		{"bad protocol", ctx, d, Config{Protocols: []string{"smtp"}}},
		{"negative timeout", ctx, d, Config{Timeout: -1}},
	} {
		if _, err := Start(c.ctx, c.d, c.cfg); !errors.Is(err, p2pd.ErrInvalid) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
