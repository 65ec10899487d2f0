package reach

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	r, err := (p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{g.lanIP}}).Bind("", 0)
	if err != nil {
		t.Fatal(err)
	}
	g.lanDo(t, func() {
		for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
			if _, err = d.AddListener(context.Background(), proto, r); err != nil {
				return
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

// wanEcho sends a line to addr from the WAN host and returns the echo.
func wanEcho(t *testing.T, g *gateNet, proto p2pd.Proto, addr netip.AddrPort) (string, error) {
	t.Helper()
	var reply string
	var err error
	g.wanDo(t, func() {
		var c net.Conn
		c, err = net.DialTimeout(strings.ToLower(proto.String()), addr.String(), 3*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err = fmt.Fprint(c, "hello from the WAN\n"); err != nil {
			return
		}
		if proto == p2pd.UDP {
			buf := make([]byte, 512)
			var n int
			n, err = c.Read(buf)
			reply = string(buf[:n])
			return
		}
		reply, err = bufio.NewReader(c).ReadString('\n')
	})
	return reply, err
}

// TestMapperGateway maps a TCP and a UDP listener through miniupnpd with
// each protocol switched on alone: a WAN host reaches them through the
// router's public address, a restarted miniupnpd gets the mappings back,
// and Shutdown removes them.
func TestMapperGateway(t *testing.T) {
	for _, c := range []struct {
		mode  gateMode
		proto string
	}{{gateUPnP, "upnp"}, {gateNATPMP, "nat-pmp"}, {gatePCP, "pcp"}} {
		t.Run(c.proto, func(t *testing.T) {
			t.Parallel()
			g := newGateNet(t, c.mode)
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
			if c.mode == gateUPnP {
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
			if c.mode == gateUPnP {
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
	if limit := 3*timeout + 2*time.Second; elapsed > limit {
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
