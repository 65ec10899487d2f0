//go:build linux

package reach

import (
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// TestGateNet checks the gateNet harness with the real clients (upnpc,
// natpmpc) and hand-made PCP requests: each mode answers its protocols
// and only those, mappings forward traffic from the WAN host, and a
// restart of miniupnpd forgets them and resets the epoch.
func TestGateNet(t *testing.T) {
	testnet.Require(t)
	for _, mode := range []gateMode{gateNone, gateUPnP, gateNATPMP, gatePCP, gateAll} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			g := newGateNet(t, mode)
			gateCheckMasquerade(t, g)
			if mode.upnp() {
				gateCheckUPnP(t, g)
			} else {
				gateCheckNoUPnP(t, g)
			}
			if mode.natpmp() {
				gateCheckNATPMP(t, g)
			} else {
				gateCheckNoNATPMP(t, g)
			}
			if mode.pcp() {
				gateCheckPCP(t, g)
			} else if _, err := g.pcpAnnounce(t); err == nil {
				t.Errorf("PCP ANNOUNCE answered in mode %v", mode)
			} else {
				t.Logf("no PCP, as wanted: %v", err)
			}
			if mode != gateNone {
				gateCheckRestart(t, g)
			}
		})
	}
}

// gateCheckMasquerade: the LAN host reaches the WAN host, which sees the
// router's public address.
func gateCheckMasquerade(t *testing.T, g *gateNet) {
	var ln net.Listener
	var err error
	g.wanDo(t, func() { ln, err = net.Listen("tcp4", netip.AddrPortFrom(g.wanIP, 0).String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var c net.Conn
	g.lanDo(t, func() { c, err = net.DialTimeout("tcp4", ln.Addr().String(), 3*time.Second) })
	if err != nil {
		t.Fatalf("LAN host cannot reach the WAN host: %v", err)
	}
	defer c.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if from := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); from != g.pubIP {
		t.Errorf("WAN host sees the LAN host as %v, want %v (masquerade)", from, g.pubIP)
	}
}

func gateHas(ms []gateMapping, proto string, ext uint16, internal netip.AddrPort) bool {
	return slices.ContainsFunc(ms, func(m gateMapping) bool {
		return m.Proto == proto && m.External == ext && m.Internal == internal
	})
}

func gateCheckUPnP(t *testing.T, g *gateNet) {
	// Discovery by SSDP, as a client does.
	out, err := gateRun(g.lan, 15*time.Second, "upnpc", "-i", "-s")
	if err != nil {
		t.Fatalf("upnpc -i -s: %v\n%s", err, out)
	}
	if !strings.Contains(out, "IGD") || !strings.Contains(out, "ExternalIPAddress = 203.0.113.1") {
		t.Fatalf("upnpc -i -s: no IGD with ExternalIPAddress = 203.0.113.1:\n%s", out)
	}

	internal := netip.AddrPortFrom(g.lanIP, 40001)
	var ln net.Listener
	g.lanDo(t, func() { ln, err = net.Listen("tcp4", internal.String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out = g.upnpc(t, "-a", g.lanIP.String(), "40001", "40001", "TCP")
	if !strings.Contains(out, "is redirected to internal 10.88.1.2:40001") {
		t.Fatalf("upnpc -a: no redirection:\n%s", out)
	}
	if ms := g.upnpMappings(t); !gateHas(ms, "TCP", 40001, internal) {
		t.Fatalf("upnpc -l lists %v, want TCP 40001->%v\n%s", ms, internal, g.upnpList(t))
	}
	if ms := g.nftMappings(t); !gateHas(ms, "TCP", 40001, internal) {
		t.Errorf("nft has %v, want TCP 40001->%v\n%s", ms, internal, g.nftRedirects(t))
	}

	// The WAN host connects to the public address and reaches the listener.
	pub := netip.AddrPortFrom(g.pubIP, 40001).String()
	var c net.Conn
	g.wanDo(t, func() { c, err = net.DialTimeout("tcp4", pub, 3*time.Second) })
	if err != nil {
		t.Fatalf("WAN host cannot connect to %s: %v", pub, err)
	}
	c.Write([]byte("hello"))
	c.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("LAN listener: %v", err)
	}
	s.SetDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(s)
	s.Close()
	if string(got) != "hello" || err != nil {
		t.Errorf("LAN listener read %q, %v; want hello", got, err)
	}
	if from := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); from != g.wanIP {
		t.Errorf("LAN listener sees %v, want the WAN host %v", from, g.wanIP)
	}

	// Deleted: gone from the list and nft, and the port is closed.
	g.upnpc(t, "-d", "40001", "TCP")
	if ms := g.upnpMappings(t); gateHas(ms, "TCP", 40001, internal) {
		t.Errorf("after upnpc -d, upnpc -l still lists %v", ms)
	}
	if ms := g.nftMappings(t); len(ms) != 0 {
		t.Errorf("after upnpc -d, nft has %v", ms)
	}
	g.wanDo(t, func() { c, err = net.DialTimeout("tcp4", pub, 500*time.Millisecond) })
	if err == nil {
		c.Close()
		t.Errorf("WAN host still connects to %s after the delete", pub)
	}
}

func gateCheckNoUPnP(t *testing.T, g *gateNet) {
	out, err := gateRun(g.lan, 15*time.Second, "upnpc", "-i", "-s")
	if err == nil {
		t.Errorf("upnpc -i -s succeeded in mode %v:\n%s", g.mode, out)
	} else if strings.Contains(err.Error(), "timed out") {
		t.Errorf("upnpc -i -s did not give up within 15 s: %v", err)
	}
}

func gateCheckNATPMP(t *testing.T, g *gateNet) {
	epoch, err := g.natpmpPublic(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NAT-PMP: public address %v, epoch %d", g.pubIP, epoch)

	internal := netip.AddrPortFrom(g.lanIP, 40003)
	var pc net.PacketConn
	g.lanDo(t, func() { pc, err = net.ListenPacket("udp4", internal.String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	out := g.mustRun(t, g.lan, 3*time.Second, "natpmpc", "-g", g.gwIP.String(), "-a", "40003", "40003", "udp", "3600")
	if !strings.Contains(out, "Mapped public port 40003 protocol UDP to local port 40003") {
		t.Fatalf("natpmpc -a: no mapping:\n%s", out)
	}
	if ms := g.nftMappings(t); !gateHas(ms, "UDP", 40003, internal) {
		t.Fatalf("nft has %v, want UDP 40003->%v\n%s", ms, internal, g.nftRedirects(t))
	}

	// A datagram from the WAN host to the public port reaches the LAN.
	var wc net.Conn
	g.wanDo(t, func() { wc, err = net.Dial("udp4", netip.AddrPortFrom(g.pubIP, 40003).String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	buf := make([]byte, 64)
	var n int
	var from net.Addr
	for try := 0; ; try++ {
		wc.Write([]byte("ping"))
		pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, from, err = pc.ReadFrom(buf); err == nil || try == 5 {
			break
		}
	}
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("LAN host got %q, %v; want ping through the NAT-PMP mapping", buf[:n], err)
	}
	if ip := from.(*net.UDPAddr).AddrPort().Addr(); ip != g.wanIP {
		t.Errorf("datagram from %v, want the WAN host %v", ip, g.wanIP)
	}
	if ct := g.conntrack(t); !strings.Contains(ct, "dport=40003") {
		t.Errorf("conntrack -L -p udp shows no flow to port 40003:\n%s", ct)
	}

	// Lifetime 0 deletes.
	g.mustRun(t, g.lan, 3*time.Second, "natpmpc", "-g", g.gwIP.String(), "-a", "40003", "40003", "udp", "0")
	if ms := g.nftMappings(t); gateHas(ms, "UDP", 40003, internal) {
		t.Errorf("after the NAT-PMP delete, nft has %v", ms)
	}
}

func gateCheckNoNATPMP(t *testing.T, g *gateNet) {
	// natpmpc retries for minutes when nothing answers: 3 s then killed.
	if epoch, err := g.natpmpPublic(3 * time.Second); err == nil {
		t.Errorf("natpmpc -g succeeded in mode %v (epoch %d)", g.mode, epoch)
	} else {
		t.Logf("no NAT-PMP, as wanted: %v", err)
	}
}

func gateCheckPCP(t *testing.T, g *gateNet) {
	epoch, err := g.pcpAnnounce(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PCP: epoch %d", epoch)
	var nonce [12]byte
	rand.Read(nonce[:])
	internal := netip.AddrPortFrom(g.lanIP, 40004)
	a, err := g.pcpMap(t, nonce, 17, 40004, 40004, 120)
	if err != nil {
		t.Fatal(err)
	}
	if a.Result != 0 || a.Nonce != nonce || a.Proto != 17 || a.IntPort != 40004 || a.External.Addr() != g.pubIP || a.Lifetime == 0 {
		t.Fatalf("PCP MAP: %+v; want SUCCESS, our nonce, UDP 40004 on %v", a, g.pubIP)
	}
	t.Logf("PCP MAP: %v for %d s", a.External, a.Lifetime)
	if ms := g.nftMappings(t); !gateHas(ms, "UDP", a.External.Port(), internal) {
		t.Fatalf("nft has %v, want UDP %d->%v\n%s", ms, a.External.Port(), internal, g.nftRedirects(t))
	}
	a, err = g.pcpMap(t, nonce, 17, 40004, 0, 0)
	if err != nil || a.Result != 0 {
		t.Fatalf("PCP delete: %+v, %v", a, err)
	}
	if ms := g.nftMappings(t); len(ms) != 0 {
		t.Errorf("after the PCP delete, nft has %v", ms)
	}
}

// gateCheckRestart maps a port with each protocol of the mode, restarts
// miniupnpd, and checks that the mappings are gone and the epoch restarted.
func gateCheckRestart(t *testing.T, g *gateNet) {
	var before uint32
	if g.mode.upnp() {
		g.upnpc(t, "-a", g.lanIP.String(), "40010", "40010", "TCP")
	}
	if g.mode.natpmp() {
		out := g.mustRun(t, g.lan, 3*time.Second, "natpmpc", "-g", g.gwIP.String(), "-a", "40011", "40011", "udp", "3600")
		e, err := gateParseEpoch(out)
		if err != nil {
			t.Fatal(err)
		}
		before = e
	}
	if g.mode.pcp() {
		var nonce [12]byte
		rand.Read(nonce[:])
		a, err := g.pcpMap(t, nonce, 17, 40012, 40012, 120)
		if err != nil || a.Result != 0 {
			t.Fatalf("PCP MAP: %+v, %v", a, err)
		}
		before = a.Epoch
	}
	if len(g.nftMappings(t)) == 0 {
		t.Fatalf("no mapping before the restart:\n%s", g.nftRedirects(t))
	}
	start := time.Now()
	g.restartMiniupnpd(t)
	t.Logf("restart took %v", time.Since(start).Round(time.Millisecond))
	if ms := g.nftMappings(t); len(ms) != 0 {
		t.Errorf("after the restart, nft has %v", ms)
	}
	if g.mode.upnp() {
		if ms := g.upnpMappings(t); len(ms) != 0 {
			t.Errorf("after the restart, upnpc -l lists %v", ms)
		}
	}
	var after uint32
	var err error
	if g.mode.natpmp() {
		after, err = g.natpmpPublic(3 * time.Second)
	} else if g.mode.pcp() {
		after, err = g.pcpAnnounce(t)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A restarted epoch counts from the restart: at most the seconds since.
	if since := uint32(time.Since(start).Seconds()) + 1; (g.mode.natpmp() || g.mode.pcp()) && after > since {
		t.Errorf("epoch %d, %d s after the restart began (%d before): want it restarted", after, since, before)
	}
	if g.mode.natpmp() || g.mode.pcp() {
		t.Logf("epoch before the restart %d, after %d", before, after)
	}
}
