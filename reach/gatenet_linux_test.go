//go:build linux

package reach

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// A home router in network namespaces, for tests of port mapping against
// a real miniupnpd (UPnP IGD, NAT-PMP, PCP):
//
//	lan ── lan0 ──────── lan0  router  wan0 ──────── wan0 ── wan
//	10.88.1.2            10.88.1.1     203.0.113.1          203.0.113.2 (free for tests)
//	default via .1       NAT, miniupnpd                     203.0.113.3, .4: coturn (STUN, RFC 5780)
//
// The router masquerades 10.88.1.0/24 out wan0 and forwards nothing from
// the WAN but established flows and what miniupnpd opened. IPv4 only.
//
// miniupnpd 2.3.1 calls 203.0.113.0/24 reserved and refuses it as ext_ip=,
// so it learns its public address by STUN from coturn on the WAN host.
// Its STUN test sends CHANGE-REQUESTs: coturn needs two listening IPs to
// answer them (RFC 5780); with one, miniupnpd concludes "symmetric NAT"
// and disables port forwarding.
//
// miniupnpd's nftables backend keeps no state of its own: it reads its
// mappings back from its chains, and leaves them there when it exits. So
// [gateNet.restartMiniupnpd] flushes those chains (and the conntrack
// table) between stop and start, as a reboot of the router would.

// gateMode says which protocols miniupnpd answers.
type gateMode int

const (
	gateNone   gateMode = iota // no miniupnpd at all
	gateUPnP                   // UPnP IGD only
	gateNATPMP                 // NAT-PMP only (PCP requests dropped by nft)
	gatePCP                    // PCP only (NAT-PMP requests dropped by nft)
	gateAll                    // UPnP, NAT-PMP and PCP
)

func (m gateMode) String() string {
	switch m {
	case gateNone:
		return "none"
	case gateUPnP:
		return "upnp"
	case gateNATPMP:
		return "natpmp"
	case gatePCP:
		return "pcp"
	case gateAll:
		return "all"
	}
	return "gateMode(" + strconv.Itoa(int(m)) + ")"
}

func (m gateMode) upnp() bool   { return m == gateUPnP || m == gateAll }
func (m gateMode) natpmp() bool { return m == gateNATPMP || m == gateAll }
func (m gateMode) pcp() bool    { return m == gatePCP || m == gateAll }

// The addresses of a gateNet.
var (
	gateLANIP  = netip.MustParseAddr("10.88.1.2")
	gateGWIP   = netip.MustParseAddr("10.88.1.1")
	gatePubIP  = netip.MustParseAddr("203.0.113.1")
	gateWANIP  = netip.MustParseAddr("203.0.113.2")
	gateSTUNIP = []netip.Addr{netip.MustParseAddr("203.0.113.3"), netip.MustParseAddr("203.0.113.4")}
)

// gateOpt changes a gateNet.
type gateOpt int

// gateIPv6 adds IPv6 without NAT: a routed LAN prefix behind the router's
// firewall (policy drop for new connections from the WAN), and miniupnpd
// with IPv6 on (pinholes through PCP and WANIPv6FirewallControl).
const gateIPv6 gateOpt = 1

// gateIGDv1 makes miniupnpd describe an IGD v1 (force_igd_desc_v1=yes):
// WANIPConnection:1 instead of :2.
const gateIGDv1 gateOpt = 2

var (
	gateLAN6 = netip.MustParseAddr("2001:db8:88:1::2")
	gateGW6  = netip.MustParseAddr("2001:db8:88:1::1")
	gateWAN6 = netip.MustParseAddr("2001:db8:113::2")
)

const (
	gateSTUNPort   = 3478 // coturn; its RFC 5780 alternate port is 3479
	gatePMPPort    = 5351 // NAT-PMP and PCP
	gateReadyAfter = 20 * time.Second
	gateStopGrace  = 5 * time.Second
)

// gateNet is the topology above. Its methods are called from the test
// goroutine.
type gateNet struct {
	net                       *testnet.Net
	lan, router, wan          *testnet.Host
	lanIP, gwIP, pubIP, wanIP netip.Addr     // 10.88.1.2, 10.88.1.1, 203.0.113.1, 203.0.113.2
	v6                        bool           // gateIPv6: the addresses below, and miniupnpd with IPv6
	igdv1                     bool           // gateIGDv1: miniupnpd offers IGD v1 only (WANIPConnection:1)
	lan6, gw6, wan6           netip.Addr     // 2001:db8:88:1::2, 2001:db8:88:1::1 (router, LAN side), 2001:db8:113::2
	stun                      netip.AddrPort // coturn, 203.0.113.3:3478 (also 203.0.113.4, ports 3478 and 3479)
	mode                      gateMode

	dir     string // miniupnpd.conf, miniupnpd.pid, the nft ruleset, coturn's pid file
	conf    string
	pidFile string

	mu      sync.Mutex
	mini    *gateProc   // the running miniupnpd; nil for gateNone or while restarting
	runs    []*gateProc // every miniupnpd started, for the log of a failed test
	coturn  *gateProc
	descURL string // the UPnP root description of the running miniupnpd ("" without UPnP)
}

// newGateNet builds the topology, starts coturn and (unless gateNone)
// miniupnpd, and returns when miniupnpd answers its protocols' real
// clients. t.Cleanup stops every process and removes the namespaces.
func newGateNet(t *testing.T, mode gateMode, opts ...gateOpt) *gateNet {
	t.Helper()
	testnet.Require(t)
	for _, tool := range []string{"nft", "conntrack", "turnserver", "miniupnpd", "upnpc", "natpmpc"} {
		if _, err := exec.LookPath(tool); err != nil {
			testnet.SkipUnlessCI(t, "%s not installed (apt-get install -y miniupnpd-nftables miniupnpc natpmpc conntrack nftables coturn): %v", tool, err)
		}
	}
	n := testnet.New(t)
	g := &gateNet{
		net:   n,
		lanIP: gateLANIP, gwIP: gateGWIP, pubIP: gatePubIP, wanIP: gateWANIP,
		stun:  netip.AddrPortFrom(gateSTUNIP[0], gateSTUNPort),
		mode:  mode,
		dir:   t.TempDir(),
		v6:    slices.Contains(opts, gateIPv6),
		igdv1: slices.Contains(opts, gateIGDv1),
	}
	g.conf = filepath.Join(g.dir, "miniupnpd.conf")
	g.pidFile = filepath.Join(g.dir, "miniupnpd.pid")
	// Registered after testnet.New's cleanup, so it runs before the
	// namespaces go away.
	t.Cleanup(func() { g.cleanup(t) })

	g.lan, g.router, g.wan = n.AddHost("lan"), n.AddHost("router"), n.AddHost("wan")
	noV6 := !g.v6
	lanHost, lanGW, wanGW := []string{"10.88.1.2/24"}, []string{"10.88.1.1/24"}, []string{"203.0.113.1/24"}
	wanHost := []string{"203.0.113.2/24", "203.0.113.3/24", "203.0.113.4/24"}
	if g.v6 {
		// A routed prefix for the LAN, no NAT66: the router's firewall is
		// what a pinhole opens.
		g.lan6, g.gw6, g.wan6 = gateLAN6, gateGW6, gateWAN6
		lanHost, lanGW = append(lanHost, "2001:db8:88:1::2/64"), append(lanGW, "2001:db8:88:1::1/64")
		wanGW, wanHost = append(wanGW, "2001:db8:113::1/64"), append(wanHost, "2001:db8:113::2/64")
	}
	n.Link(g.lan, testnet.IfConfig{Name: "lan0", NoIPv6: noV6, Addrs: lanHost},
		g.router, testnet.IfConfig{Name: "lan0", NoIPv6: noV6, Addrs: lanGW})
	n.Link(g.router, testnet.IfConfig{Name: "wan0", NoIPv6: noV6, Addrs: wanGW},
		g.wan, testnet.IfConfig{Name: "wan0", NoIPv6: noV6, Addrs: wanHost})
	g.lan.IP(t, "route", "add", "default", "via", g.gwIP.String())
	g.router.Sysctl(t, "net.ipv4.ip_forward", "1")
	if g.v6 {
		g.lan.IP(t, "-6", "route", "add", "default", "via", g.gw6.String())
		g.wan.IP(t, "-6", "route", "add", "2001:db8:88:1::/64", "via", "2001:db8:113::1")
		g.router.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	}
	g.setupNFT(t)
	g.startCoturn(t)
	if mode == gateNone {
		return g
	}
	g.writeConf(t)
	g.startMiniupnpd(t)
	return g
}

// cleanup stops miniupnpd (SIGTERM, then SIGKILL) and coturn, and logs
// their output if the test failed.
func (g *gateNet) cleanup(t *testing.T) {
	g.mu.Lock()
	mini, runs, coturn := g.mini, g.runs, g.coturn
	g.mini, g.coturn = nil, nil
	g.mu.Unlock()
	if mini != nil && !mini.stop(gateStopGrace) {
		t.Errorf("miniupnpd did not exit within %v of SIGTERM: killed", gateStopGrace)
	}
	if coturn != nil {
		coturn.kill()
	}
	if !t.Failed() {
		return
	}
	for i, p := range runs {
		t.Logf("miniupnpd run %d (%s):\n%s", i+1, p.status(), p.out.String())
	}
	if coturn != nil {
		t.Logf("coturn (%s):\n%s", coturn.status(), coturn.out.String())
	}
}

// setupNFT lays out the router's ruleset: the chains miniupnpd fills
// (miniupnpd, prerouting_miniupnpd, postrouting_miniupnpd, named in
// miniupnpd.conf), the masquerade, and for gateNATPMP / gatePCP the rule
// that drops the other protocol's requests by their version byte.
func (g *gateNet) setupNFT(t *testing.T) {
	t.Helper()
	var drop string
	switch g.mode {
	case gateNATPMP:
		drop = `iifname "lan0" udp dport 5351 @th,64,8 2 drop # PCP`
	case gatePCP:
		drop = `iifname "lan0" udp dport 5351 @th,64,8 0 drop # NAT-PMP`
	}
	ruleset := `
table inet filter {
	chain input {
		type filter hook input priority 0; policy accept;
		` + drop + `
	}
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		iifname "lan0" oifname "wan0" accept
		jump miniupnpd
	}
	chain miniupnpd {
	}
}
table inet nat {
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		jump postrouting_miniupnpd
		oifname "wan0" ip saddr 10.88.1.0/24 masquerade
	}
	chain prerouting_miniupnpd {
	}
	chain postrouting_miniupnpd {
	}
}
`
	file := filepath.Join(g.dir, "router.nft")
	if err := os.WriteFile(file, []byte(ruleset), 0o644); err != nil {
		t.Fatal(err)
	}
	g.mustRun(t, g.router, 10*time.Second, "nft", "-f", file)
}

// startCoturn runs coturn, STUN only, on 203.0.113.3 and .4 of the WAN
// host, and waits until all four addresses (two IPs, ports 3478 and 3479)
// answer a Binding request.
func (g *gateNet) startCoturn(t *testing.T) {
	t.Helper()
	args := []string{"-n", "--no-auth", "--no-tls", "--no-dtls", "--no-cli", "--stun-only",
		"--log-file", "stdout", "--simple-log", "--pidfile", filepath.Join(g.dir, "turnserver.pid")}
	for _, ip := range gateSTUNIP {
		args = append(args, "--listening-ip", ip.String())
	}
	p, err := gateStartProc(g.wan, "turnserver", args...)
	if err != nil {
		t.Fatalf("starting coturn: %v", err)
	}
	g.mu.Lock()
	g.coturn = p
	g.mu.Unlock()

	var conn *net.UDPConn
	g.wan.Do(t, func() {
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(g.wanIP, 0)))
	})
	if err != nil {
		t.Fatalf("STUN probe socket: %v", err)
	}
	defer conn.Close()
	deadline := time.Now().Add(gateReadyAfter)
	for _, ip := range gateSTUNIP {
		for _, port := range []uint16{gateSTUNPort, gateSTUNPort + 1} {
			to := netip.AddrPortFrom(ip, port)
			for {
				err := gateSTUNPing(conn, to, 200*time.Millisecond)
				if err == nil {
					break
				}
				if p.exited() {
					t.Fatalf("coturn exited (%s):\n%s", p.status(), p.out.String())
				}
				if time.Now().After(deadline) {
					t.Fatalf("coturn does not answer on %v after %v: %v", to, gateReadyAfter, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}

// gateSTUNPing sends one STUN Binding request to to and waits up to
// timeout for its success response.
func gateSTUNPing(conn *net.UDPConn, to netip.AddrPort, timeout time.Duration) error {
	req := make([]byte, 20)
	binary.BigEndian.PutUint16(req[0:], 0x0001) // Binding request, no attributes
	binary.BigEndian.PutUint32(req[4:], 0x2112A442)
	rand.Read(req[8:20])
	if _, err := conn.WriteToUDPAddrPort(req, to); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if from == to && n >= 20 && binary.BigEndian.Uint16(buf) == 0x0101 && bytes.Equal(buf[8:20], req[8:20]) {
			return nil
		}
	}
}

// writeConf writes miniupnpd.conf for g.mode. The same file serves every
// restart (the uuid stays).
func (g *gateNet) writeConf(t *testing.T) {
	t.Helper()
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	conf := fmt.Sprintf(`# miniupnpd 2.3.1 (nftables) for a gateNet test
ext_ifname=wan0
listening_ip=lan0
http_port=0
enable_upnp=%s
enable_natpmp=%s
force_igd_desc_v1=%s
ipv6_disable=%s
secure_mode=yes
system_uptime=no
clean_ruleset_interval=0
min_lifetime=120
max_lifetime=86400
uuid=%x-%x-%x-%x-%x
ext_perform_stun=yes
ext_stun_host=%s
ext_stun_port=%d
upnp_table_name=filter
upnp_nat_table_name=nat
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 10.88.1.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`, yn(g.mode.upnp()), yn(g.mode.natpmp() || g.mode.pcp()), yn(g.igdv1), yn(!g.v6),
		u[0:4], u[4:6], u[6:8], u[8:10], u[10:16], g.stun.Addr(), g.stun.Port())
	if err := os.WriteFile(g.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

var gateHTTPPort = regexp.MustCompile(`HTTP listening on port (\d+)`)

// startMiniupnpd starts miniupnpd in the router and waits until it is
// ready: its log says it listens for each enabled protocol and that port
// forwarding is enabled, and a real client of each protocol gets the
// public address (upnpc -i -s, natpmpc -g, a PCP ANNOUNCE).
func (g *gateNet) startMiniupnpd(t *testing.T) {
	t.Helper()
	os.Remove(g.pidFile)
	p, err := gateStartProc(g.router, "miniupnpd", "-f", g.conf, "-d", "-P", g.pidFile)
	if err != nil {
		t.Fatalf("starting miniupnpd: %v", err)
	}
	g.mu.Lock()
	g.mini = p
	g.runs = append(g.runs, p)
	g.descURL = ""
	g.mu.Unlock()

	deadline := time.Now().Add(gateReadyAfter)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("miniupnpd (mode %v) not ready: "+format+"\nits log:\n%s", append([]any{g.mode}, append(args, p.out.String())...)...)
	}
	// The log first: everything it prints comes after the STUN test.
	for {
		log := p.out.String()
		if strings.Contains(log, "Port forwarding is now disabled") {
			fail("it disabled port forwarding (STUN said the WAN is filtered or symmetric: does coturn answer CHANGE-REQUEST from two IPs?)")
		}
		m := gateHTTPPort.FindStringSubmatch(log)
		upnpOK := !g.mode.upnp() || m != nil
		pmpOK := !(g.mode.natpmp() || g.mode.pcp()) || strings.Contains(log, "Listening for NAT-PMP/PCP traffic")
		if upnpOK && pmpOK && strings.Contains(log, "Port forwarding is now enabled") {
			if m != nil {
				g.mu.Lock()
				g.descURL = fmt.Sprintf("http://%s:%s/rootDesc.xml", g.gwIP, m[1])
				g.mu.Unlock()
			}
			break
		}
		if p.exited() {
			fail("it exited (%s)", p.status())
		}
		if time.Now().After(deadline) {
			fail("its log says nothing of listening after %v", gateReadyAfter)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b, err := os.ReadFile(g.pidFile); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid != p.cmd.Process.Pid {
			t.Logf("miniupnpd's pid file says %d, its process is %d", pid, p.cmd.Process.Pid)
		}
	}
	// Then the clients.
	type probe struct {
		name string
		fn   func() error
	}
	var probes []probe
	if g.mode.upnp() {
		probes = append(probes, probe{"upnpc -i -s", func() error {
			out, err := gateRun(g.lan, 12*time.Second, "upnpc", "-i", "-s")
			if err == nil && !strings.Contains(out, "ExternalIPAddress = "+g.pubIP.String()) {
				err = fmt.Errorf("no ExternalIPAddress = %s in:\n%s", g.pubIP, out)
			}
			return err
		}})
	}
	if g.mode.natpmp() {
		probes = append(probes, probe{"natpmpc -g", func() error {
			_, err := g.natpmpPublic(3 * time.Second)
			return err
		}})
	}
	if g.mode.pcp() {
		probes = append(probes, probe{"PCP ANNOUNCE", func() error {
			_, err := g.pcpAnnounce(t)
			return err
		}})
	}
	for _, pr := range probes {
		for {
			err := pr.fn()
			if err == nil {
				break
			}
			if p.exited() {
				fail("it exited (%s)", p.status())
			}
			if time.Now().After(deadline) {
				fail("%s: %v", pr.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// restartMiniupnpd stops miniupnpd (SIGTERM to its PID, waiting for it
// to exit), flushes its nft chains and the router's conntrack table (a
// reboot: miniupnpd would otherwise read its old mappings back from the
// chains), and starts it again. Its NAT-PMP/PCP epoch starts again from 0.
func (g *gateNet) restartMiniupnpd(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	p := g.mini
	g.mini = nil
	g.mu.Unlock()
	if p == nil {
		t.Fatalf("restartMiniupnpd: no miniupnpd running (mode %v)", g.mode)
	}
	if !p.stop(gateStopGrace) {
		t.Errorf("miniupnpd did not exit within %v of SIGTERM: killed", gateStopGrace)
	}
	g.mustRun(t, g.router, 10*time.Second, "nft", "flush", "chain", "inet", "filter", "miniupnpd")
	g.mustRun(t, g.router, 10*time.Second, "nft", "flush", "chain", "inet", "nat", "prerouting_miniupnpd")
	g.mustRun(t, g.router, 10*time.Second, "nft", "flush", "chain", "inet", "nat", "postrouting_miniupnpd")
	g.mustRun(t, g.router, 10*time.Second, "conntrack", "-F")
	g.startMiniupnpd(t)
}

// upnpList is the output of `upnpc -i -l` in the LAN host.
func (g *gateNet) upnpList(t *testing.T) string {
	t.Helper()
	return g.upnpc(t, "-l")
}

// upnpc runs `upnpc -i args...` in the LAN host and returns its output,
// failing the test if upnpc fails. When the running miniupnpd's root
// description URL is known, it is given with -u: no SSDP (2 s) each time.
func (g *gateNet) upnpc(t *testing.T, args ...string) string {
	t.Helper()
	pre := []string{"-i"}
	g.mu.Lock()
	if g.descURL != "" {
		pre = append(pre, "-u", g.descURL)
	}
	g.mu.Unlock()
	return g.mustRun(t, g.lan, 15*time.Second, "upnpc", append(pre, args...)...)
}

// gateMapping is one port forwarding of the router.
type gateMapping struct {
	Proto    string // "TCP" or "UDP"
	External uint16 // port on g.pubIP
	Internal netip.AddrPort
	Desc     string // UPnP description ("" from nft)
}

func (m gateMapping) String() string {
	return fmt.Sprintf("%s %d->%v", m.Proto, m.External, m.Internal)
}

// gateUPnPLine matches a mapping listed by `upnpc -l`:
//
//	0 TCP 40001->10.88.1.2:40001 'libminiupnpc' '' 604798
var gateUPnPLine = regexp.MustCompile(`(?m)^\s*\d+\s+(TCP|UDP)\s+(\d+)->([0-9.]+):(\d+)\s+'([^']*)'`)

// upnpMappings parses upnpList.
func (g *gateNet) upnpMappings(t *testing.T) []gateMapping {
	t.Helper()
	return gateParseUPnPList(g.upnpList(t))
}

func gateParseUPnPList(out string) []gateMapping {
	var ms []gateMapping
	for _, m := range gateUPnPLine.FindAllStringSubmatch(out, -1) {
		ext, _ := strconv.ParseUint(m[2], 10, 16)
		ip, _ := netip.ParseAddr(m[3])
		port, _ := strconv.ParseUint(m[4], 10, 16)
		ms = append(ms, gateMapping{Proto: m[1], External: uint16(ext),
			Internal: netip.AddrPortFrom(ip, uint16(port)), Desc: m[5]})
	}
	return ms
}

// nftRedirects is `nft list ruleset` of the router: miniupnpd's port
// forwardings (from any protocol) are the dnat rules of chain
// prerouting_miniupnpd and the accept rules of chain miniupnpd.
func (g *gateNet) nftRedirects(t *testing.T) string {
	t.Helper()
	return g.mustRun(t, g.router, 10*time.Second, "nft", "list", "ruleset")
}

var (
	// iif "wan0" @nh,72,8 0x6 th dport 40001 dnat ip to 10.88.1.2:40001
	gateNFTDNAT  = regexp.MustCompile(`dport (\d+) .*dnat ip to ([0-9.]+):(\d+)`)
	gateNFTProto = regexp.MustCompile(`@nh,72,8 (0x6|0x11)\b|\b(tcp|udp) dport|l4proto (tcp|udp)\b`)
)

// nftMappings parses the dnat rules miniupnpd put in prerouting_miniupnpd.
func (g *gateNet) nftMappings(t *testing.T) []gateMapping {
	t.Helper()
	out := g.mustRun(t, g.router, 10*time.Second, "nft", "list", "chain", "inet", "nat", "prerouting_miniupnpd")
	return gateParseNFT(out)
}

func gateParseNFT(out string) []gateMapping {
	var ms []gateMapping
	for line := range strings.Lines(out) {
		d := gateNFTDNAT.FindStringSubmatch(line)
		if d == nil {
			continue
		}
		m := gateMapping{}
		if p := gateNFTProto.FindStringSubmatch(line); p != nil {
			switch p[1] + p[2] + p[3] {
			case "0x6", "tcp":
				m.Proto = "TCP"
			case "0x11", "udp":
				m.Proto = "UDP"
			}
		}
		ext, _ := strconv.ParseUint(d[1], 10, 16)
		ip, _ := netip.ParseAddr(d[2])
		port, _ := strconv.ParseUint(d[3], 10, 16)
		m.External, m.Internal = uint16(ext), netip.AddrPortFrom(ip, uint16(port))
		ms = append(ms, m)
	}
	return ms
}

// conntrack is `conntrack -L -p udp` on the router.
func (g *gateNet) conntrack(t *testing.T) string {
	t.Helper()
	return g.mustRun(t, g.router, 10*time.Second, "conntrack", "-L", "-p", "udp")
}

// wanDo runs fn on the WAN host (see testnet.Host.Do).
func (g *gateNet) wanDo(t *testing.T, fn func()) {
	t.Helper()
	g.wan.Do(t, fn)
}

// lanDo runs fn on the LAN host (see testnet.Host.Do).
func (g *gateNet) lanDo(t *testing.T, fn func()) {
	t.Helper()
	g.lan.Do(t, fn)
}

// natpmpPublic runs `natpmpc -g 10.88.1.1` in the LAN host and returns
// the epoch it reports; an error unless it reports g.pubIP.
func (g *gateNet) natpmpPublic(timeout time.Duration) (epoch uint32, err error) {
	out, err := gateRun(g.lan, timeout, "natpmpc", "-g", g.gwIP.String())
	if err != nil {
		return 0, err
	}
	if !strings.Contains(out, "Public IP address : "+g.pubIP.String()) {
		return 0, fmt.Errorf("natpmpc: no public address %s in:\n%s", g.pubIP, out)
	}
	return gateParseEpoch(out)
}

var gateEpoch = regexp.MustCompile(`epoch = (\d+)`)

func gateParseEpoch(out string) (uint32, error) {
	m := gateEpoch.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no epoch in:\n%s", out)
	}
	e, err := strconv.ParseUint(m[1], 10, 32)
	return uint32(e), err
}

// mustRun is gateRun, failing the test on error.
func (g *gateNet) mustRun(t *testing.T, h *testnet.Host, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := gateRun(h, timeout, name, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// gateRun runs name in h's namespace, killed after timeout, and returns
// its stdout; the error holds its stderr.
func gateRun(h *testnet.Host, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// ip netns exec execs name in place: the context kills name itself.
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		what := err.Error()
		if ctx.Err() != nil {
			what = "timed out after " + timeout.String()
		}
		err = fmt.Errorf("%s %s (host %s): %s: %s", name, strings.Join(args, " "), h.Name, what,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), err
}

// PCP (RFC 6887), by hand, for the harness and its self-test.

const (
	gatePCPAnnounce = 0
	gatePCPMap      = 1
)

// gatePCPAnswer is a PCP response.
type gatePCPAnswer struct {
	Result   byte // 0 SUCCESS, 2 NOT_AUTHORIZED, ...
	Lifetime uint32
	Epoch    uint32
	// MAP only:
	Nonce    [12]byte
	Proto    byte
	IntPort  uint16
	External netip.AddrPort
}

// pcpAnnounce sends a PCP ANNOUNCE from the LAN host and returns the
// gateway's epoch; an error if nothing answers (within about 1.5 s) or
// the result is not SUCCESS.
func (g *gateNet) pcpAnnounce(t *testing.T) (uint32, error) {
	a, err := g.pcp(t, gatePCPAnnounce, 0, nil)
	if err != nil {
		return 0, err
	}
	if a.Result != 0 {
		return a.Epoch, fmt.Errorf("PCP ANNOUNCE: result %d", a.Result)
	}
	return a.Epoch, nil
}

// pcpMap sends a PCP MAP from the LAN host for proto (6 TCP, 17 UDP) and
// internal port intPort of g.lanIP, suggesting external port ext, for
// lifetime (0 deletes; reuse the mapping's nonce). The answer's result
// code is the caller's to check.
func (g *gateNet) pcpMap(t *testing.T, nonce [12]byte, proto byte, intPort, ext uint16, lifetime uint32) (gatePCPAnswer, error) {
	op := make([]byte, 36)
	copy(op[0:12], nonce[:])
	op[12] = proto
	binary.BigEndian.PutUint16(op[16:], intPort)
	binary.BigEndian.PutUint16(op[18:], ext)
	any4 := netip.AddrFrom4([4]byte{}).As16() // ::ffff:0.0.0.0: any IPv4 external address
	copy(op[20:36], any4[:])
	return g.pcp(t, gatePCPMap, lifetime, op)
}

// pcp sends one PCP request to the router's 5351 from the LAN host, up
// to three times, 500 ms apart.
func (g *gateNet) pcp(t *testing.T, opcode byte, lifetime uint32, body []byte) (gatePCPAnswer, error) {
	req := make([]byte, 24, 24+len(body))
	req[0], req[1] = 2, opcode
	binary.BigEndian.PutUint32(req[4:], lifetime)
	client := g.lanIP.As16() // IPv4-mapped
	copy(req[8:24], client[:])
	req = append(req, body...)

	var conn *net.UDPConn
	var err error
	g.lan.Do(t, func() {
		conn, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(g.gwIP, gatePMPPort)))
	})
	if err != nil {
		return gatePCPAnswer{}, err
	}
	defer conn.Close()
	buf := make([]byte, 1100)
	for try := 0; try < 3; try++ {
		if _, err = conn.Write(req); err != nil {
			return gatePCPAnswer{}, fmt.Errorf("PCP: %w", err)
		}
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			var n int
			n, err = conn.Read(buf)
			if err != nil {
				break
			}
			if n < 24 || buf[0] != 2 || buf[1] != 0x80|opcode {
				continue
			}
			a := gatePCPAnswer{Result: buf[3], Lifetime: binary.BigEndian.Uint32(buf[4:]), Epoch: binary.BigEndian.Uint32(buf[8:])}
			if opcode == gatePCPMap && n >= 60 {
				copy(a.Nonce[:], buf[24:36])
				a.Proto = buf[36]
				a.IntPort = binary.BigEndian.Uint16(buf[40:])
				ip := netip.AddrFrom16([16]byte(buf[44:60])).Unmap()
				a.External = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(buf[42:]))
			}
			return a, nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return gatePCPAnswer{}, fmt.Errorf("PCP: %w", err)
		}
	}
	return gatePCPAnswer{}, fmt.Errorf("PCP: no answer: %w", err)
}

// gateProc is a long-running program in a namespace.
type gateProc struct {
	name string
	cmd  *exec.Cmd
	out  gateBuf
	done chan struct{} // closed when Wait returned
	err  error         // Wait's, once done is closed
}

func gateStartProc(h *testnet.Host, name string, args ...string) (*gateProc, error) {
	p := &gateProc{name: name, done: make(chan struct{})}
	p.cmd = h.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.WaitDelay = 2 * time.Second // in case a child keeps the output pipe
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *gateProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *gateProc) status() string {
	if !p.exited() {
		return "pid " + strconv.Itoa(p.cmd.Process.Pid) + ", running"
	}
	if p.err == nil {
		return "exited 0"
	}
	return p.err.Error()
}

// stop sends SIGTERM to the program's own PID (ip netns exec execs it
// in place) and waits up to grace for it to exit, then kills it. It
// reports whether the program exited by itself.
func (p *gateProc) stop(grace time.Duration) bool {
	if p.exited() {
		return true
	}
	// miniupnpd sometimes misses a SIGTERM that arrives while it handles a
	// request: send it again every 200 ms until the grace time is over.
	tm := time.NewTimer(grace)
	defer tm.Stop()
	again := time.NewTicker(200 * time.Millisecond)
	defer again.Stop()
	for {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return true
		case <-again.C:
			continue
		case <-tm.C:
		}
		p.kill()
		return false
	}
}

// kill sends SIGKILL and waits for the program.
func (p *gateProc) kill() {
	if !p.exited() {
		p.cmd.Process.Kill()
	}
	<-p.done
}

// gateBuf is a bytes.Buffer for several writers.
type gateBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *gateBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *gateBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
