//go:build linux

package stun

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pd/p2pd"

	"github.com/p2pd/p2pd/internal/testnet"
)

// natNet is a small Internet in network namespaces:
//
//	client ── eth0 ─── lan  router  wan ─── eth0 ── public
//	10.0.0.2, 10.0.0.3   10.0.0.1   203.0.113.1     203.0.113.2, .3 (coturn), .4 (a liar)
//	198.51.100.2         198.51.100.1 2001:db8:1::1 2001:db8:1::2, ::3 (coturn)
//	fd00:1::2            fd00:1::1
//	2001:db8:2::2        2001:db8:2::1
//
// The router masquerades 10.0.0.0/8 to 203.0.113.1 (10.0.0.3 with random
// ports: a "symmetric" NAT) and fd00::/8 to 2001:db8:1::1 (nftables), and routes the public 198.51.100.0/24 and
// 2001:db8:2::/64 untouched. The public host has no route back to the
// private networks: a STUN answer reaches the client only through the NAT.
type natNet struct {
	client, router, public *testnet.Host
	coturn                 []string // the STUN servers coturn serves
	liar                   string   // a fake STUN server that reports 192.0.2.66
}

var (
	stunPublic4 = []string{"203.0.113.2:3478", "203.0.113.3:3478"}
	stunPublic6 = []string{"[2001:db8:1::2]:3478", "[2001:db8:1::3]:3478"}
)

func newNATNet(t *testing.T) *natNet {
	t.Helper()
	n := testnet.New(t)
	for _, tool := range []string{"nft", "turnserver"} {
		if _, err := exec.LookPath(tool); err != nil {
			testnet.SkipUnlessCI(t, "%s not installed (apt-get install -y nftables coturn): %v", tool, err)
		}
	}
	nn := &natNet{client: n.AddHost("client"), router: n.AddHost("router"), public: n.AddHost("public")}
	c, r, p := nn.client, nn.router, nn.public
	n.Link(c, testnet.IfConfig{Name: "eth0", NoDAD: true,
		Addrs: []string{"10.0.0.2/24", "10.0.0.3/24", "198.51.100.2/24", "fd00:1::2/64", "2001:db8:2::2/64"}},
		r, testnet.IfConfig{Name: "lan", NoDAD: true,
			Addrs: []string{"10.0.0.1/24", "198.51.100.1/24", "fd00:1::1/64", "2001:db8:2::1/64"}})
	n.Link(r, testnet.IfConfig{Name: "wan", NoDAD: true, Addrs: []string{"203.0.113.1/24", "2001:db8:1::1/64"}},
		p, testnet.IfConfig{Name: "eth0", NoDAD: true,
			Addrs: []string{"203.0.113.2/24", "203.0.113.3/24", "203.0.113.4/24", "2001:db8:1::2/64", "2001:db8:1::3/64"}})
	c.IP(t, "route", "add", "default", "via", "10.0.0.1")
	c.IP(t, "-6", "route", "add", "default", "via", "fd00:1::1")
	p.IP(t, "route", "add", "198.51.100.0/24", "via", "203.0.113.1")
	p.IP(t, "-6", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::1")
	r.Sysctl(t, "net.ipv4.ip_forward", "1")
	r.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	for _, cmd := range [][]string{
		{"add", "table", "ip", "nat"},
		{"add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority 100 ; }"},
		{"add", "rule", "ip", "nat", "post", "oifname", "wan", "ip", "saddr", "10.0.0.3", "masquerade", "random"},
		{"add", "rule", "ip", "nat", "post", "oifname", "wan", "ip", "saddr", "10.0.0.0/8", "masquerade"},
		{"add", "table", "ip6", "nat"},
		{"add", "chain", "ip6", "nat", "post", "{ type nat hook postrouting priority 100 ; }"},
		{"add", "rule", "ip6", "nat", "post", "oifname", "wan", "ip6", "saddr", "fd00::/8", "masquerade"},
	} {
		if out, err := r.Command("nft", cmd...).CombinedOutput(); err != nil {
			t.Fatalf("nft %s: %v: %s", strings.Join(cmd, " "), err, out)
		}
	}
	nn.startCoturn(t)
	p.Do(t, func() {
		nn.liar = startFakeSTUN(t, "203.0.113.4", natTo("192.0.2.66")).Addr.String()
	})
	return nn
}

// startCoturn runs Debian's coturn in the public host, STUN only, on two
// IPv4 and two IPv6 addresses (its RFC 5780 alternate port is 3479), and
// waits until every address answers.
func (nn *natNet) startCoturn(t *testing.T) {
	t.Helper()
	args := []string{"-n", "--no-auth", "--no-tls", "--no-dtls", "--no-cli", "--stun-only",
		"--log-file", "stdout", "--simple-log", "--pidfile", filepath.Join(t.TempDir(), "turnserver.pid")}
	for _, s := range append(slices.Clone(stunPublic4), stunPublic6...) {
		ap := netip.MustParseAddrPort(s)
		args = append(args, "--listening-ip", ap.Addr().String())
	}
	cmd := nn.public.Command("turnserver", args...)
	var log lockedBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting coturn: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("coturn's log:\n%s", log.String())
		}
	})
	nn.coturn = append(slices.Clone(stunPublic4), stunPublic6...)
	// Ready when both addresses of each family answer the public host.
	deadline := time.Now().Add(15 * time.Second)
	for _, c := range []struct {
		nic     string
		servers []string
	}{{"203.0.113.2", stunPublic4}, {"2001:db8:1::2", stunPublic6}} {
		for {
			r := &Resolver{Servers: c.servers, Timeout: 300 * time.Millisecond, RTO: 50 * time.Millisecond,
				TTL: -1, FailTTL: -1}
			var err error
			nn.public.Do(t, func() { _, err = r.ExtAddr(context.Background(), nil, netip.MustParseAddr(c.nic)) })
			if err == nil {
				break
			}
			select {
			case e := <-exited:
				t.Fatalf("coturn exited: %v\n%s", e, log.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("coturn does not answer on %v: %v\n%s", c.servers, err, log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// routeOf finds the route of pool that holds nic.
func routeOf(t *testing.T, pool p2pd.RoutePool, nic string) p2pd.Route {
	t.Helper()
	r, ok := pool.Locate(netip.MustParseAddr(nic))
	if !ok {
		t.Fatalf("no route holds %s in %v", nic, pool)
	}
	return r
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// TestSTUNNamespaceNAT resolves the client's routes through a real NAT
// (nftables masquerade) with a real STUN server (coturn), and checks the
// failure cases: unreachable servers and a lying one.
func TestSTUNNamespaceNAT(t *testing.T) {
	nn := newNATNet(t)
	ctx := context.Background()
	newRes := func(servers ...string) *Resolver {
		return &Resolver{Servers: servers, Timeout: time.Second, RTO: 100 * time.Millisecond}
	}

	t.Run("routes", func(t *testing.T) {
		res := newRes(nn.coturn...)
		var ifc *p2pd.Interface
		var err error
		nn.client.Do(t, func() {
			if ifc, err = p2pd.InterfaceByName("eth0"); err == nil {
				err = ifc.Resolve(ctx, res)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("routes: %v %v", ifc.Routes4, ifc.Routes6)
		// Both private IPv4 NIC IPs leave through the NAT as the router's
		// public address: one route. The public NIC IP is its own route.
		if len(ifc.Routes4) != 2 {
			t.Fatalf("IPv4 routes %v, want 2", ifc.Routes4)
		}
		if r := routeOf(t, ifc.Routes4, "10.0.0.2"); !slices.Equal(r.NIC, addrs("10.0.0.2", "10.0.0.3")) || !slices.Equal(r.Ext, addrs("203.0.113.1")) {
			t.Errorf("NATed route %v, want nic=[10.0.0.2 10.0.0.3] ext=[203.0.113.1]", r)
		}
		if r := routeOf(t, ifc.Routes4, "198.51.100.2"); !slices.Equal(r.NIC, addrs("198.51.100.2")) || !slices.Equal(r.Ext, addrs("198.51.100.2")) {
			t.Errorf("public route %v, want nic=[198.51.100.2] ext=[198.51.100.2]", r)
		}
		// IPv6: the ULA address behind NAT66, the global one is itself.
		if r := routeOf(t, ifc.Routes6, "fd00:1::2"); !slices.Equal(r.Ext, addrs("2001:db8:1::1")) {
			t.Errorf("ULA route %v, want ext=[2001:db8:1::1]", r)
		}
		if r := routeOf(t, ifc.Routes6, "2001:db8:2::2"); !slices.Equal(r.Ext, addrs("2001:db8:2::2")) {
			t.Errorf("global IPv6 route %v, want ext=[2001:db8:2::2]", r)
		}
		// Resolve does not ask about public addresses; ask directly: STUN
		// confirms that they map to themselves, over IPv4 and IPv6.
		for _, nic := range []string{"198.51.100.2", "2001:db8:2::2"} {
			var ext netip.Addr
			nn.client.Do(t, func() { ext, err = res.ExtAddr(ctx, ifc, netip.MustParseAddr(nic)) })
			if err != nil || ext != netip.MustParseAddr(nic) {
				t.Errorf("ExtAddr(%s) = %v, %v; want itself", nic, ext, err)
			}
		}
		for _, nic := range []string{"10.0.0.2", "10.0.0.3", "fd00:1::2"} {
			if err := res.Err(netip.MustParseAddr(nic)); err != nil {
				t.Errorf("Err(%s) = %v", nic, err)
			}
		}
	})

	t.Run("public host sees itself", func(t *testing.T) {
		res := newRes(nn.coturn...)
		for _, nic := range []string{"203.0.113.1", "2001:db8:1::1"} {
			var ext netip.Addr
			var err error
			nn.router.Do(t, func() { ext, err = res.ExtAddr(ctx, nil, netip.MustParseAddr(nic)) })
			if err != nil || ext != netip.MustParseAddr(nic) {
				t.Errorf("router ExtAddr(%s) = %v, %v; want itself", nic, ext, err)
			}
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		// 203.0.113.9 is nobody's (the router's ARP goes unanswered: a
		// black hole); nothing listens on 203.0.113.2:3999 (refused).
		for _, servers := range [][]string{{"203.0.113.9:3478", "203.0.113.2:3999"}, {"203.0.113.9:3478"}, {"203.0.113.2:3999"}} {
			res := newRes(servers...)
			var ifc *p2pd.Interface
			var err error
			start := time.Now()
			nn.client.Do(t, func() {
				if ifc, err = p2pd.InterfaceByName("eth0"); err == nil {
					err = ifc.Resolve(ctx, res)
				}
			})
			took := time.Since(start)
			if err != nil {
				t.Fatalf("%v: Resolve: %v", servers, err)
			}
			if took > 2*time.Second {
				t.Errorf("%v: Resolve took %v, want at most about the 1s timeout", servers, took)
			}
			r := routeOf(t, ifc.Routes4, "10.0.0.2")
			if len(r.Ext) != 0 || !slices.Equal(r.NIC, addrs("10.0.0.2", "10.0.0.3")) {
				t.Errorf("%v: route %v, want nic=[10.0.0.2 10.0.0.3] and no EXT IP", servers, r)
			}
			if r := routeOf(t, ifc.Routes4, "198.51.100.2"); !slices.Equal(r.Ext, addrs("198.51.100.2")) {
				t.Errorf("%v: public route %v lost its EXT IP", servers, r)
			}
			reason := res.Err(netip.MustParseAddr("10.0.0.2"))
			if !errors.Is(reason, p2pd.ErrExtUnknown) {
				t.Errorf("%v: Err = %v, want ErrExtUnknown", servers, reason)
			}
			t.Logf("%v: took %v: %v", servers, took.Round(time.Millisecond), reason)
		}
	})

	t.Run("liar", func(t *testing.T) {
		cases := []struct {
			servers []string
			want    netip.Addr // invalid: ErrExtUnknown
		}{
			{[]string{stunPublic4[0], nn.liar}, netip.Addr{}},
			{[]string{stunPublic4[0], nn.liar, stunPublic4[1]}, netip.MustParseAddr("203.0.113.1")},
			{[]string{nn.liar}, netip.MustParseAddr("192.0.2.66")}, // one server: trusted, as configured
		}
		for _, c := range cases {
			res := newRes(c.servers...)
			var ext netip.Addr
			var err error
			nn.client.Do(t, func() { ext, err = res.ExtAddr(ctx, nil, netip.MustParseAddr("10.0.0.2")) })
			if ext != c.want || (c.want.IsValid() != (err == nil)) {
				t.Errorf("%v: ExtAddr = %v, %v; want %v", c.servers, ext, err, c.want)
			}
			if !c.want.IsValid() {
				var se *Error
				if !errors.As(err, &se) || !strings.Contains(se.Reason, "disagree") {
					t.Errorf("%v: %v, want a disagreement", c.servers, err)
				}
				t.Log(err)
			}
		}
	})

	t.Run("endpoints", func(t *testing.T) {
		res := newRes(nn.coturn...)
		var ifc *p2pd.Interface
		var err error
		d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{Logger: quietLog}}
		defer d.Close()
		nn.client.Do(t, func() {
			if ifc, err = p2pd.InterfaceByName("eth0"); err != nil {
				return
			}
			if err = ifc.Resolve(ctx, res); err != nil {
				return
			}
			_, err = d.ListenAll(ctx, []p2pd.Target{ifc.Routes4, ifc.Routes6}, p2pd.Ports{p2pd.Port(7007)}, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
		})
		if err != nil {
			t.Fatal(err)
		}
		ll := nn.client.LinkLocal(t, "eth0")
		type want struct {
			extIP string // "" unknown
			ext   bool   // port known too
		}
		wants := map[netip.Addr]want{
			netip.MustParseAddr("10.0.0.2"):      {"203.0.113.1", false},
			netip.MustParseAddr("198.51.100.2"):  {"198.51.100.2", true},
			netip.MustParseAddr("fd00:1::2"):     {"2001:db8:1::1", false},
			netip.MustParseAddr("2001:db8:2::2"): {"2001:db8:2::2", true},
			ll:                                   {"", false},
		}
		eps := d.Endpoints()
		seen := map[netip.Addr]int{}
		for _, e := range eps {
			t.Log(e)
			w, ok := wants[e.Local.Addr()]
			if !ok {
				t.Errorf("unexpected endpoint %v", e)
				continue
			}
			seen[e.Local.Addr()]++
			if e.Local.Port() != 7007 || e.Pipe == nil || e.Pipe.Proto() != e.Proto {
				t.Errorf("endpoint %v: want port 7007 and its pipe", e)
			}
			var wantIP netip.Addr
			if w.extIP != "" {
				wantIP = netip.MustParseAddr(w.extIP)
			}
			if e.ExtIP != wantIP {
				t.Errorf("endpoint %v: ExtIP %v, want %v", e, e.ExtIP, wantIP)
			}
			if w.ext != e.Ext.IsValid() || (w.ext && e.Ext != netip.AddrPortFrom(wantIP, 7007)) {
				t.Errorf("endpoint %v: Ext %v, want known=%v", e, e.Ext, w.ext)
			}
		}
		for a := range wants {
			if seen[a] != 2 {
				t.Errorf("%v: %d endpoints, want 2 (TCP and UDP)", a, seen[a])
			}
		}
		// The endpoints said to be reachable from outside are: the public
		// host connects to them.
		for _, e := range eps {
			if !e.Ext.IsValid() || e.Proto != p2pd.TCP {
				continue
			}
			var conn net.Conn
			nn.public.Do(t, func() { conn, err = net.DialTimeout("tcp", e.Ext.String(), 2*time.Second) })
			if err != nil {
				t.Errorf("public host cannot reach %v: %v", e, err)
				continue
			}
			conn.Close()
		}
	})
}
