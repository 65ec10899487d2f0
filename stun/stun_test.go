package stun

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pd/p2pd"

	pion "github.com/pion/stun/v3"
)

// fakeSTUN is a STUN server for tests: it answers Binding requests with the
// address mapped returns for the request's source (the source itself when
// mapped is nil), after dropping the first drop requests. A silent one never
// answers.
type fakeSTUN struct {
	conn   *net.UDPConn
	Addr   netip.AddrPort
	mapped func(src netip.AddrPort) netip.AddrPort
	silent atomic.Bool
	drop   atomic.Int32
	reqs   atomic.Int32
	mu     sync.Mutex
	ids    map[[pion.TransactionIDSize]byte]int
	done   chan struct{}
}

// startFakeSTUN listens on ip:0 (the socket is made on the calling
// goroutine: inside testnet's Host.Do it belongs to that host) and serves
// until the test ends.
func startFakeSTUN(t testing.TB, ip string, mapped func(netip.AddrPort) netip.AddrPort) *fakeSTUN {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		skipOrFail(t, "fake STUN server on %s: %v", ip, err)
	}
	return serveFakeSTUN(t, c, mapped)
}

func serveFakeSTUN(t testing.TB, c *net.UDPConn, mapped func(netip.AddrPort) netip.AddrPort) *fakeSTUN {
	f := &fakeSTUN{conn: c, Addr: stunUnmap(c.LocalAddr().(*net.UDPAddr).AddrPort()), mapped: mapped,
		ids: map[[pion.TransactionIDSize]byte]int{}, done: make(chan struct{})}
	go f.serve()
	t.Cleanup(func() {
		c.Close()
		<-f.done
	})
	return f
}

// skipOrFail skips a test whose loopback prerequisite is missing (another
// OS without 127.0.0.2), except on Linux where it must work.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if runtime.GOOS == "linux" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func (f *fakeSTUN) serve() {
	defer close(f.done)
	buf := make([]byte, 1500)
	for {
		n, src, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		m := pion.New()
		if err := pion.Decode(append([]byte(nil), buf[:n]...), m); err != nil || m.Type != pion.BindingRequest {
			continue
		}
		f.reqs.Add(1)
		f.mu.Lock()
		f.ids[m.TransactionID]++
		f.mu.Unlock()
		if f.silent.Load() || f.drop.Add(-1) >= 0 {
			continue
		}
		src = stunUnmap(src)
		to := src
		if f.mapped != nil {
			to = f.mapped(src)
		}
		resp, err := pion.Build(pion.NewTransactionIDSetter(m.TransactionID), pion.BindingSuccess,
			&pion.XORMappedAddress{IP: to.Addr().AsSlice(), Port: int(to.Port())}, pion.Fingerprint)
		if err != nil {
			panic(err)
		}
		f.conn.WriteToUDPAddrPort(resp.Raw, src)
	}
}

func (f *fakeSTUN) transactions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ids)
}

// natTo maps every source to ip, keeping the port: a NAT's view.
func natTo(ip string) func(netip.AddrPort) netip.AddrPort {
	a := netip.MustParseAddr(ip)
	return func(src netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a, src.Port()) }
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func fastResolver(servers ...*fakeSTUN) *Resolver {
	r := &Resolver{Timeout: 2 * time.Second, RTO: 20 * time.Millisecond}
	for _, s := range servers {
		r.Servers = append(r.Servers, s.Addr.String())
	}
	return r
}

var lo1 = netip.MustParseAddr("127.0.0.1")

func TestSTUNAgreement(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.1", natTo("203.0.113.7"))
	b := startFakeSTUN(t, "127.0.0.2", natTo("203.0.113.7"))
	r := fastResolver(a, b)
	ext, err := r.ExtAddr(context.Background(), nil, lo1)
	if err != nil || ext != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("ExtAddr = %v, %v; want 203.0.113.7", ext, err)
	}
	if a.transactions() != 1 || b.transactions() != 1 {
		t.Fatalf("transactions: %d and %d, want 1 each", a.transactions(), b.transactions())
	}
}

// TestSTUNLiar: a lying server is outvoted by two honest ones, and with one
// honest server against one liar nothing is trusted.
func TestSTUNLiar(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.1", natTo("203.0.113.7"))
	b := startFakeSTUN(t, "127.0.0.2", natTo("203.0.113.7"))
	liar := startFakeSTUN(t, "127.0.0.3", natTo("192.0.2.66"))

	ext, err := fastResolver(a, liar, b).ExtAddr(context.Background(), nil, lo1)
	if err != nil || ext != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("two honest, one liar: %v, %v; want 203.0.113.7", ext, err)
	}

	r := fastResolver(a, liar)
	ext, err = r.ExtAddr(context.Background(), nil, lo1)
	if ext.IsValid() || !errors.Is(err, p2pd.ErrExtUnknown) {
		t.Fatalf("one honest, one liar: %v, %v; want ErrExtUnknown", ext, err)
	}
	var se *Error
	if !errors.As(err, &se) || !strings.Contains(se.Reason, "disagree") || len(se.Answers) != 2 {
		t.Fatalf("error %v: want a *Error saying the servers disagree, with 2 answers", err)
	}
	t.Log(err)
	if !errors.Is(r.Err(lo1), p2pd.ErrExtUnknown) {
		t.Fatalf("Err(nic) = %v, want the reason", r.Err(lo1))
	}

	// Agree = 1 with a liar and an honest server: still a disagreement,
	// since neither has more votes than the other.
	r = fastResolver(a, liar)
	r.Agree = 1
	if ext, err := r.ExtAddr(context.Background(), nil, lo1); !errors.Is(err, p2pd.ErrExtUnknown) {
		t.Fatalf("Agree=1, a tie: %v, %v; want ErrExtUnknown", ext, err)
	}
}

func TestSTUNOneServer(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.1", nil)
	ext, err := fastResolver(a).ExtAddr(context.Background(), nil, lo1)
	if err != nil || ext != lo1 {
		t.Fatalf("one honest server: %v, %v; want %v", ext, err, lo1)
	}
}

func TestSTUNRetransmit(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.1", natTo("203.0.113.7"))
	a.drop.Store(2)
	r := fastResolver(a)
	ext, err := r.ExtAddr(context.Background(), nil, lo1)
	if err != nil || ext != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("ExtAddr = %v, %v", ext, err)
	}
	// 3 requests, or more when a slow machine retransmits before an answer
	// arrives.
	if a.reqs.Load() < 3 || a.transactions() != 1 {
		t.Fatalf("server saw %d requests in %d transactions, want 3 in 1 (retransmissions keep the ID)", a.reqs.Load(), a.transactions())
	}
}

// TestSTUNTimeout: servers that never answer cost Timeout, no more, and the
// retransmissions are bounded.
func TestSTUNTimeout(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.1", nil)
	b := startFakeSTUN(t, "127.0.0.2", nil)
	a.silent.Store(true)
	b.silent.Store(true)
	r := fastResolver(a, b)
	r.Timeout = 300 * time.Millisecond
	r.Retries = 3
	start := time.Now()
	ext, err := r.ExtAddr(context.Background(), nil, lo1)
	took := time.Since(start)
	if ext.IsValid() || !errors.Is(err, p2pd.ErrExtUnknown) {
		t.Fatalf("ExtAddr = %v, %v; want ErrExtUnknown", ext, err)
	}
	if took < 250*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("took %v, want about the 300ms timeout", took)
	}
	var se *Error
	if !errors.As(err, &se) || se.Reason != "no STUN server answered" || !errors.Is(se.Answers[0].Err, ErrTimeout) {
		t.Fatalf("error %v: want no server answered, timeouts", err)
	}
	if n := a.reqs.Load(); n < 2 || n > 4 {
		t.Fatalf("server a saw %d requests, want 4 (1 + 3 retransmissions; fewer on a slow machine, never more)", n)
	}
}

// TestSTUNRefused: a port nobody listens on fails at once (ICMP port
// unreachable on the connected socket), not after the timeout.
func TestSTUNRefused(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dead := c.LocalAddr().String()
	c.Close()
	r := &Resolver{Servers: []string{dead}, Timeout: 5 * time.Second}
	start := time.Now()
	_, err = r.ExtAddr(context.Background(), nil, lo1)
	if !errors.Is(err, p2pd.ErrExtUnknown) {
		t.Fatalf("err = %v, want ErrExtUnknown", err)
	}
	if took := time.Since(start); (runtime.GOOS == "linux") && took > time.Second {
		t.Fatalf("took %v: a refused port should fail at once", took)
	}
	t.Log(err)
}

func TestSTUNCache(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.1", natTo("203.0.113.7"))
	r := fastResolver(a)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for range 3 {
		if ext, err := r.ExtAddr(context.Background(), nil, lo1); err != nil || !ext.IsValid() {
			t.Fatal(ext, err)
		}
	}
	if n := a.transactions(); n != 1 {
		t.Fatalf("%d transactions, want 1 (cached)", n)
	}
	now = now.Add(DefaultTTL + time.Second)
	r.ExtAddr(context.Background(), nil, lo1)
	if n := a.transactions(); n != 2 {
		t.Fatalf("%d transactions, want 2 (expired)", n)
	}

	// Failures are cached for FailTTL.
	a.silent.Store(true)
	r.Timeout = 100 * time.Millisecond
	r.Forget()
	for range 2 {
		if _, err := r.ExtAddr(context.Background(), nil, lo1); !errors.Is(err, p2pd.ErrExtUnknown) {
			t.Fatal(err)
		}
	}
	if n := a.transactions(); n != 3 {
		t.Fatalf("%d transactions, want 3: the failure was not cached", n)
	}
	now = now.Add(DefaultFailTTL + time.Second)
	r.ExtAddr(context.Background(), nil, lo1)
	if a.transactions() != 4 {
		t.Fatal("an expired failure was not asked again")
	}
	if !errors.Is(r.Err(lo1), p2pd.ErrExtUnknown) {
		t.Fatalf("Err = %v", r.Err(lo1))
	}
}

func TestSTUNContext(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.1", nil)
	a.silent.Store(true)
	r := fastResolver(a)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.ExtAddr(ctx, nil, lo1)
	if !errors.Is(err, p2pd.ErrExtUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v; want ErrExtUnknown and DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %v past a 100ms deadline", took)
	}
	if _, ok := r.cached(lo1); ok {
		t.Fatal("a failure caused by the caller's deadline was cached")
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = r.ExtAddr(ctx, nil, lo1)
	if !errors.Is(err, context.Canceled) || errors.Is(err, p2pd.ErrExtUnknown) {
		t.Fatalf("cancel: %v; want context.Canceled, not ErrExtUnknown", err)
	}
}

func TestSTUNConfigErrors(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.1", nil)
	cases := []struct {
		name string
		r    *Resolver
		want string
	}{
		{"no servers", &Resolver{}, "no IPv4 STUN server configured"},
		{"only IPv6 servers", &Resolver{Servers: []string{"[::1]:3478"}}, "no IPv4 STUN server configured"},
		{"agree too high", &Resolver{Servers: []string{a.Addr.String()}, Agree: 2}, "2 servers must agree, 1 IPv4 servers configured"},
		{"same IP twice", &Resolver{Servers: []string{a.Addr.String(), "127.0.0.1:1"}, Agree: 2}, "2 servers must agree, 1 IPv4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.r.ExtAddr(context.Background(), nil, lo1)
			if !errors.Is(err, p2pd.ErrExtUnknown) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrExtUnknown saying %q", err, c.want)
			}
		})
	}
}

func TestSTUNSplitServer(t *testing.T) {
	cases := []struct {
		in   string
		host string
		port uint16
		bad  bool
	}{
		{"192.0.2.1:3478", "192.0.2.1", 3478, false},
		{"192.0.2.1", "192.0.2.1", 3478, false},
		{"[2001:db8::1]:19302", "2001:db8::1", 19302, false},
		{"2001:db8::1", "2001:db8::1", 3478, false},
		{"[2001:db8::1]", "2001:db8::1", 3478, false},
		{"stun.example.org:3479", "stun.example.org", 3479, false},
		{"stun.example.org", "stun.example.org", 3478, false},
		{"", "", 0, true},
		{"host:0", "", 0, true},
		{"host:x", "", 0, true},
		{":3478", "", 0, true},
		{"[::1", "", 0, true}, // a bracket that does not close
		{"::1]", "", 0, true},
		{"[192.0.2.1]", "", 0, true}, // brackets are for IPv6
	}
	for _, c := range cases {
		h, p, err := splitServer(c.in)
		if (err != nil) != c.bad || (!c.bad && (h != c.host || p != c.port)) {
			t.Errorf("splitServer(%q) = %q, %d, %v", c.in, h, p, err)
		}
	}
}

// loIface is an interface made of loopback addresses, so that its "private"
// NIC IPs can be bound here; 198.51.100.9 is a public address the resolver
// must not be asked about.
func loIface(addrs ...string) *p2pd.Interface {
	ifc := &p2pd.Interface{Name: "lo", Index: 1, Flags: net.FlagUp}
	for _, a := range addrs {
		ifc.Addrs = append(ifc.Addrs, p2pd.IfAddr{Addr: netip.MustParseAddr(a), Bits: 8})
	}
	return ifc
}

// TestSTUNResolveRoutes: NIC IPs that map to the same EXT IP share a route,
// another EXT IP makes another route, a public NIC IP is its own route.
func TestSTUNResolveRoutes(t *testing.T) {
	nat := func(src netip.AddrPort) netip.AddrPort {
		ext := "203.0.113.7"
		if src.Addr() == netip.MustParseAddr("127.0.0.3") {
			ext = "203.0.113.8"
		}
		return netip.AddrPortFrom(netip.MustParseAddr(ext), src.Port())
	}
	a := startFakeSTUN(t, "127.0.0.10", nat)
	b := startFakeSTUN(t, "127.0.0.11", nat)
	r := fastResolver(a, b)
	ifc := loIface("127.0.0.1", "127.0.0.2", "127.0.0.3", "198.51.100.9")
	if err := ifc.Resolve(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"IPv4 lo nic=[127.0.0.1 127.0.0.2] ext=[203.0.113.7]",
		"IPv4 lo nic=[127.0.0.3] ext=[203.0.113.8]",
		"IPv4 lo nic=[198.51.100.9] ext=[198.51.100.9]",
	}
	if len(ifc.Routes4) != len(want) {
		t.Fatalf("routes %v, want %v", ifc.Routes4, want)
	}
	for i, w := range want {
		if ifc.Routes4[i].String() != w {
			t.Errorf("route %d = %v, want %s", i, ifc.Routes4[i], w)
		}
	}
	for _, s := range []*fakeSTUN{a, b} {
		if s.transactions() != 3 {
			t.Errorf("server %v: %d transactions, want 3 (one per private NIC IP, the public one not asked)", s.Addr, s.transactions())
		}
	}
}

// TestSTUNResolveOffline: with no server answering, Resolve succeeds within
// one Timeout for all NIC IPs together, the routes have no EXT IP, and Err
// tells why.
func TestSTUNResolveOffline(t *testing.T) {
	a := startFakeSTUN(t, "127.0.0.10", nil)
	b := startFakeSTUN(t, "127.0.0.11", nil)
	a.silent.Store(true)
	b.silent.Store(true)
	r := fastResolver(a, b)
	r.Timeout = 300 * time.Millisecond
	ifc := loIface("127.0.0.1", "127.0.0.2", "127.0.0.3", "198.51.100.9")
	start := time.Now()
	if err := ifc.Resolve(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Resolve took %v, want about one 300ms timeout", took)
	}
	want := []string{
		"IPv4 lo nic=[127.0.0.1 127.0.0.2 127.0.0.3] ext=[]",
		"IPv4 lo nic=[198.51.100.9] ext=[198.51.100.9]",
	}
	if len(ifc.Routes4) != len(want) {
		t.Fatalf("routes %v, want %v", ifc.Routes4, want)
	}
	for i, w := range want {
		if ifc.Routes4[i].String() != w {
			t.Errorf("route %d = %v, want %s", i, ifc.Routes4[i], w)
		}
	}
	for _, nic := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		err := r.Err(netip.MustParseAddr(nic))
		if !errors.Is(err, p2pd.ErrExtUnknown) || !strings.Contains(err.Error(), "no STUN server answered") {
			t.Errorf("Err(%s) = %v", nic, err)
		}
	}
}

// TestErrorText: every error of the package says "p2pd: " once, at the
// start, however many errors it wraps (an answer's timeout, an invalid
// server, an unsupported family, a cancelled context).
func TestErrorText(t *testing.T) {
	silent := startFakeSTUN(t, "127.0.0.1", nil)
	silent.silent.Store(true)
	quick := func(servers ...string) *Resolver {
		return &Resolver{Servers: servers, Timeout: 200 * time.Millisecond, RTO: 50 * time.Millisecond}
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	ctx := context.Background()
	var errs []error
	_, err := quick(silent.Addr.String()).ExtAddr(ctx, nil, lo1) // an answer's ErrTimeout
	errs = append(errs, err)
	_, err = quick("[::1").ExtAddr(ctx, nil, lo1) // an invalid server
	errs = append(errs, err)
	_, err = quick(silent.Addr.String()).ExtAddr(cancelled, nil, lo1)
	errs = append(errs, err)
	_, err = quick().ClassifyNAT(ctx, lo1, "[::1]:3478") // another family
	errs = append(errs, err)
	_, err = quick().ClassifyNAT(ctx, lo1, silent.Addr.String()) // no answer
	errs = append(errs, err)
	_, err = quick().ClassifyNAT(ctx, lo1, "[::1") // an invalid server
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "p2pd: ") || strings.Count(msg, "p2pd:") != 1 {
			t.Errorf("case %d: %q: want one \"p2pd: \", at the start", i, msg)
		}
	}
}
