package reach

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/stun"
	pion "github.com/pion/stun/v3"
)

// gateDaemon opens, in the LAN host, an echo Daemon with a TCP and a UDP
// listener on 10.88.1.2 (ports chosen by the system) and starts a Mapper
// on it from there. got receives every message the callback sees.
func gateDaemon(t *testing.T, g *gateNet, c Config) (d *p2pd.Daemon, m *Mapper, got chan []byte, elapsed time.Duration) {
	t.Helper()
	return gateDaemonOn(t, g, c, g.lanIP)
}

// gateDaemonOn is gateDaemon with TCP and UDP listeners on each of ips.
func gateDaemonOn(t *testing.T, g *gateNet, c Config, ips ...netip.Addr) (d *p2pd.Daemon, m *Mapper, got chan []byte, elapsed time.Duration) {
	t.Helper()
	got = make(chan []byte, 64)
	d = &p2pd.Daemon{WatchInterval: -1, PipeConfig: p2pd.PipeConfig{Framing: p2pd.FrameLine,
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
			select {
			case got <- append([]byte(nil), msg...):
			default:
			}
			p.Send(msg, from)
		})}}
	t.Cleanup(func() { d.Close() })
	var err error
	g.lanDo(t, func() {
		for _, ip := range ips {
			r, berr := (p2pd.Route{Family: p2pd.FamilyOf(ip), NIC: []netip.Addr{ip}}).Bind("", 0)
			if err = berr; err != nil {
				return
			}
			for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
				if _, err = d.AddListener(context.Background(), proto, r); err != nil {
					return
				}
			}
		}
		start := time.Now()
		m, err = Start(context.Background(), d, c)
		elapsed = time.Since(start)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return d, m, got, elapsed
}

// mappingOf returns the listener's port mapping, if it has one.
func mappingOf(e Endpoint) (External, bool) {
	for _, x := range e.External {
		if x.Source == SourceMapping {
			return x, true
		}
	}
	return External{}, false
}

// routerHas reports whether the router forwards ext (proto) to internal,
// as nft shows it: the oracle for every protocol.
func routerHas(t *testing.T, g *gateNet, proto p2pd.Proto, ext uint16, internal netip.AddrPort) bool {
	return slices.ContainsFunc(g.nftMappings(t), func(m gateMapping) bool {
		return m.Proto == proto.String() && m.External == ext && m.Internal == internal
	})
}

// wanEcho sends a line to addr from the WAN host with socat, a client of
// its own, and returns what came back.
func wanEcho(t *testing.T, g *gateNet, proto p2pd.Proto, addr netip.AddrPort) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	network := proto.String()
	if addr.Addr().Is6() {
		network += "6"
	}
	// -T: give up 2 s after the last data (a UDP echo has no end).
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", g.wan.NS, "socat", "-T", "2", "-", network+":"+addr.String())
	cmd.WaitDelay = time.Second
	cmd.Stdin = strings.NewReader("hello from the WAN\n")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil && out.Len() == 0 {
		return "", fmt.Errorf("socat %s: %v: %s", addr, err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// TestMapperGateway maps a TCP and a UDP listener through miniupnpd with
// each protocol switched on alone: a WAN host reaches them through the
// router's public address, a restarted miniupnpd gets the mappings back,
// and Shutdown removes them.
func TestMapperGateway(t *testing.T) {
	for _, c := range []struct {
		name  string
		mode  gateMode
		proto string
		opts  []gateOpt
	}{
		{"upnp", gateUPnP, "upnp", nil},
		{"upnp-igdv1", gateUPnP, "upnp", []gateOpt{gateIGDv1}},
		{"nat-pmp", gateNATPMP, "nat-pmp", nil},
		{"pcp", gatePCP, "pcp", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			g := newGateNet(t, c.mode, c.opts...)
			d, m, _, _ := gateDaemon(t, g, Config{Timeout: time.Second, Refresh: time.Second, Lifetime: 10 * time.Minute})
			eps := m.Endpoints()
			if len(eps) != 2 {
				t.Fatalf("%d endpoints", len(eps))
			}
			for _, e := range eps {
				x, ok := mappingOf(e)
				if !ok || x.Protocol != c.proto || x.Addr.Addr() != g.pubIP || e.Err != nil {
					t.Fatalf("%v: no %s mapping on %v (err %v)", e, c.proto, g.pubIP, e.Err)
				}
				t.Log(e)
				if !routerHas(t, g, e.Proto, x.Addr.Port(), e.Local) {
					t.Fatalf("the router does not forward %v: %v", x.Addr, g.nftMappings(t))
				}
				if reply, err := wanEcho(t, g, e.Proto, x.Addr); err != nil || reply != "hello from the WAN\n" {
					t.Fatalf("%v from the WAN: %q, %v", x.Addr, reply, err)
				}
			}
			if c.proto == "upnp" {
				if n := len(g.upnpMappings(t)); n != 2 {
					t.Fatalf("upnpc -l lists %d mappings, want 2:\n%s", n, g.upnpList(t))
				}
			}

			// miniupnpd restarts and forgets: the mappings come back.
			g.restartMiniupnpd(t)
			waitUntil(t, "mapped again after a restart", func() bool {
				for _, e := range m.Endpoints() {
					x, ok := mappingOf(e)
					if !ok || !routerHas(t, g, e.Proto, x.Addr.Port(), e.Local) {
						return false
					}
				}
				return true
			})
			for _, e := range m.Endpoints() {
				x, _ := mappingOf(e)
				if reply, err := wanEcho(t, g, e.Proto, x.Addr); err != nil || reply != "hello from the WAN\n" {
					t.Fatalf("%v from the WAN after a restart: %q, %v", x.Addr, reply, err)
				}
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if ms := g.nftMappings(t); len(ms) != 0 {
				t.Fatalf("after Shutdown the router still forwards %v", ms)
			}
			if c.proto == "upnp" {
				if ms := g.upnpMappings(t); len(ms) != 0 {
					t.Fatalf("after Shutdown upnpc -l lists %v", ms)
				}
			}
			d.Close()
		})
	}
}

// TestMapperFollowsListeners: a listener closed while mapped loses its
// mapping on the router; one opened later gets one.
func TestMapperFollowsListeners(t *testing.T) {
	g := newGateNet(t, gatePCP)
	d, m, _, _ := gateDaemon(t, g, Config{Timeout: time.Second, Refresh: time.Second})
	first := m.Endpoints()[0]
	x, ok := mappingOf(first)
	if !ok {
		t.Fatalf("%v: no mapping", first)
	}
	first.Pipe.Close()
	waitUntil(t, "unmapped", func() bool { return !routerHas(t, g, first.Proto, x.Addr.Port(), first.Local) })
	r, _ := (p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{g.lanIP}}).Bind("", 0)
	var p *p2pd.Pipe
	var err error
	g.lanDo(t, func() { p, err = d.AddListener(context.Background(), p2pd.TCP, r) })
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the new listener mapped", func() bool {
		for _, e := range m.Endpoints() {
			if x, ok := mappingOf(e); ok && e.Pipe == p && routerHas(t, g, e.Proto, x.Addr.Port(), e.Local) {
				return true
			}
		}
		return false
	})
}

// TestMapperNoMiniupnpd: a router that speaks no protocol gives a typed
// error for every listener, and Start is bounded by the protocols'
// timeouts.
func TestMapperNoMiniupnpd(t *testing.T) {
	g := newGateNet(t, gateNone)
	timeout := 500 * time.Millisecond
	_, m, _, elapsed := gateDaemon(t, g, Config{Timeout: timeout})
	for _, e := range m.Endpoints() {
		var me *MapError
		if !errors.Is(e.Err, ErrNoMapping) || !errors.As(e.Err, &me) || len(e.External) != 0 {
			t.Errorf("%v: err %v", e, e.Err)
		}
		t.Log(e)
	}
	// Each of the three protocols costs at most its timeout (PCP and
	// NAT-PMP fail at once on the router's ICMP, UPnP waits for SSDP).
	if limit := 3*timeout + 5*time.Second; elapsed > limit {
		t.Errorf("Start took %v, more than the protocols' timeouts (%v)", elapsed, limit)
	}
}

// gateConntrackPort finds, in `conntrack -L -p udp`, the port the router
// gave the flow from the LAN host's port to the STUN server.
func gateConntrackPort(out string, local netip.AddrPort, server netip.AddrPort) (string, bool) {
	re := regexp.MustCompile(fmt.Sprintf(`src=%s dst=%s sport=%d dport=%d .*src=%s dst=\S+ sport=%d dport=(\d+)`,
		regexp.QuoteMeta(local.Addr().String()), regexp.QuoteMeta(server.Addr().String()), local.Port(), server.Port(),
		regexp.QuoteMeta(server.Addr().String()), server.Port()))
	if m := re.FindStringSubmatch(out); m != nil {
		return m[1], true
	}
	return "", false
}

// TestMapperSTUN: behind the router's masquerade, a UDP listener's STUN
// mapping (coturn on the WAN host, asked through the listener's socket) is
// the port the router's conntrack shows; the answers never reach the
// callback, and a forged STUN answer sent to the listener's port mapping
// does.
func TestMapperSTUN(t *testing.T) {
	g := newGateNet(t, gateAll)
	res := &stun.Resolver{Servers: []string{g.stun.String()}, Agree: 1, RTO: 100 * time.Millisecond}
	_, m, got, _ := gateDaemon(t, g, Config{Timeout: 2 * time.Second, Refresh: time.Second, STUN: res})
	var udp Endpoint
	for _, e := range m.Endpoints() {
		if e.Proto == p2pd.UDP {
			udp = e
		}
	}
	var viaSTUN, mapped External
	for _, x := range udp.External {
		switch x.Source {
		case SourceSTUN:
			viaSTUN = x
		case SourceMapping:
			mapped = x
		}
	}
	if !viaSTUN.Addr.IsValid() || !mapped.Addr.IsValid() || udp.Err != nil {
		t.Fatalf("%v: want a STUN and a mapped address (err %v)", udp, udp.Err)
	}
	t.Log(udp)
	port, ok := gateConntrackPort(g.conntrack(t), udp.Local, g.stun)
	if !ok || port != fmt.Sprint(viaSTUN.Addr.Port()) || viaSTUN.Addr.Addr() != g.pubIP {
		t.Fatalf("STUN says %v; the router's conntrack says port %q:\n%s", viaSTUN.Addr, port, g.conntrack(t))
	}

	// A STUN-shaped answer with a transaction ID nobody asked for, sent from
	// the WAN host to the listener's mapped port, is an ordinary datagram.
	forged, err := pion.Build(pion.TransactionID, pion.BindingSuccess,
		&pion.XORMappedAddress{IP: net.IPv4(192, 0, 2, 66), Port: 4242}, pion.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	g.wanDo(t, func() {
		c, err := net.Dial("udp", mapped.Addr.String())
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		c.Write(forged.Raw)
	})
	var mu sync.Mutex
	seenSTUN := 0
	deadline := time.After(5 * time.Second)
	for forgedSeen := false; !forgedSeen; {
		select {
		case msg := <-got:
			if pion.IsMessage(msg) {
				mu.Lock()
				seenSTUN++
				mu.Unlock()
				forgedSeen = string(msg) == string(forged.Raw)
			}
		case <-deadline:
			t.Fatal("the forged STUN answer did not reach the callback")
		}
	}
	// Probes went on meanwhile (Refresh 1 s): none of their answers was
	// the callback's.
	if seenSTUN != 1 {
		t.Fatalf("the callback saw %d STUN messages, want only the forged one", seenSTUN)
	}
}

// pinholed reports whether the router's firewall lets the WAN reach
// internal (proto): the accept rule miniupnpd adds to chain miniupnpd,
// which matches the IPv6 header's raw bytes, e.g.
//
//	iif "wan0" th dport 43195 @nh,192,128 0x20010db8008800010000000000000002 @nh,48,8 0x6 accept
func pinholed(t *testing.T, g *gateNet, proto p2pd.Proto, internal netip.AddrPort) bool {
	out := g.mustRun(t, g.router, 10*time.Second, "nft", "list", "chain", "inet", "filter", "miniupnpd")
	next := "0x6"
	if proto == p2pd.UDP {
		next = "0x11"
	}
	want := []string{fmt.Sprintf("dport %d ", internal.Port()), fmt.Sprintf("@nh,192,128 0x%x ", internal.Addr().As16()),
		"@nh,48,8 " + next + " ", "accept"}
	for line := range strings.Lines(out) {
		if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(line, w) }) {
			return true
		}
	}
	return false
}

// TestMapperPinhole: IPv6 listeners on a global address behind the
// router's firewall get a pinhole (PCP, or UPnP's WANIPv6FirewallControl):
// a WAN host reaches them only while the Mapper holds it.
func TestMapperPinhole(t *testing.T) {
	for _, c := range []struct {
		mode  gateMode
		proto string
	}{{gatePCP, "pcp"}, {gateUPnP, "upnp"}} {
		t.Run(c.proto, func(t *testing.T) {
			g := newGateNet(t, c.mode, gateIPv6)
			d, m, _, _ := gateDaemonOn(t, g, Config{Timeout: time.Second, Refresh: time.Second, Protocols: []string{c.proto}}, g.lan6)
			var eps []Endpoint
			for _, e := range m.Endpoints() {
				if e.Family == p2pd.IPv6 {
					eps = append(eps, e)
				}
			}
			if len(eps) != 2 {
				t.Fatalf("%d IPv6 endpoints", len(eps))
			}
			for _, e := range eps {
				x, ok := mappingOf(e)
				if !ok || x.Protocol != c.proto || x.Addr != e.Local || e.Err != nil {
					t.Fatalf("%v: no %s pinhole (err %v)", e, c.proto, e.Err)
				}
				t.Log(e)
				if !pinholed(t, g, e.Proto, e.Local) {
					t.Fatalf("no accept rule for %v on the router:\n%s", e.Local, g.nftRedirects(t))
				}
				if reply, err := wanEcho(t, g, e.Proto, e.Local); err != nil || reply != "hello from the WAN\n" {
					t.Fatalf("%v from the WAN: %q, %v", e.Local, reply, err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			// Without the pinhole the firewall drops new connections
			// from the WAN again.
			for _, e := range eps {
				if pinholed(t, g, e.Proto, e.Local) {
					t.Fatalf("after Shutdown the router still lets the WAN reach %v", e.Local)
				}
				if e.Proto == p2pd.TCP {
					if reply, err := wanEcho(t, g, e.Proto, e.Local); err == nil {
						t.Fatalf("%v reached from the WAN after Shutdown: %q", e.Local, reply)
					}
				}
			}
			d.Close()
		})
	}
}
