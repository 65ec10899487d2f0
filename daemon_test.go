package p2pd_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/testnet"
)

// dmNet is the test topology: host srv runs daemons; host cli reaches it
// over two veth links, eth1 (10.77.0.0/24, 2001:db8:77::/64) and eth2
// (10.78.0.0/24, 2001:db8:78::/64). Both ends of both links are dual-stack,
// with link-local addresses, DAD off.
type dmNet struct {
	srv, cli   *testnet.Host
	eth1, eth2 *p2pd.Interface // srv's, read inside srv
	cliIndex   map[string]int  // cli's interface index by name (the zone to reach srv's link-local on that link)
}

func dmSetup(t *testing.T) *dmNet {
	t.Helper()
	n := testnet.New(t)
	srv, cli := n.AddHost("srv"), n.AddHost("cli")
	for _, l := range []string{"77", "78"} {
		name := "eth1"
		if l == "78" {
			name = "eth2"
		}
		n.Link(srv, testnet.IfConfig{Name: name, Addrs: []string{"10." + l + ".0.1/24", "2001:db8:" + l + "::1/64"}, NoDAD: true},
			cli, testnet.IfConfig{Name: name, Addrs: []string{"10." + l + ".0.2/24", "2001:db8:" + l + "::2/64"}, NoDAD: true})
	}
	dn := &dmNet{srv: srv, cli: cli, cliIndex: map[string]int{}}
	srv.Do(t, func() {
		var err error
		if dn.eth1, err = p2pd.InterfaceByName("eth1"); err != nil {
			t.Fatal(err)
		}
		if dn.eth2, err = p2pd.InterfaceByName("eth2"); err != nil {
			t.Fatal(err)
		}
	})
	for _, i := range cli.Interfaces(t) {
		dn.cliIndex[i.Name] = i.Index
	}
	return dn
}

// onSrv runs fn inside srv. Zones name srv's interfaces; the pipes resolve
// them on the calling thread, so no cache of another namespace gets in the way.
func (dn *dmNet) onSrv(t *testing.T, fn func()) {
	t.Helper()
	dn.srv.Do(t, fn)
}

// fromCli maps an address srv listens on to the address cli dials: the same
// IP, and for a link-local one cli's own interface on that link as a numeric
// zone (numeric, so that it does not depend on Go's zone cache).
func (dn *dmNet) fromCli(ap netip.AddrPort) netip.AddrPort {
	a := ap.Addr()
	if z := a.Zone(); z != "" {
		a = a.WithZone(strconv.Itoa(dn.cliIndex[z]))
	}
	return netip.AddrPortFrom(a, ap.Port())
}

type dmTuple struct {
	Family p2pd.Family
	Proto  p2pd.Proto
	Addr   netip.AddrPort // link-local zoned with the interface name
}

func (tu dmTuple) String() string { return fmt.Sprintf("%v %v %v", tu.Family, tu.Proto, tu.Addr) }

// dmSS lists the listening sockets of h with ss, an oracle independent of
// Go: `ss -H -ltn` (TCP) or `ss -H -lun` (UDP), local address column.
func dmSS(t *testing.T, h *testnet.Host, proto p2pd.Proto) []dmTuple {
	t.Helper()
	flag := "-ltn"
	if proto == p2pd.UDP {
		flag = "-lun"
	}
	out, err := h.Command("ss", "-H", flag).Output()
	if err != nil {
		t.Fatalf("ss %s: %v", flag, err)
	}
	var list []dmTuple
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		local := f[3]
		i := strings.LastIndex(local, ":")
		host, port := local[:i], local[i+1:]
		zone := ""
		if j := strings.LastIndex(host, "%"); j >= 0 {
			host, zone = host[:j], strings.Trim(host[j+1:], "[]")
		}
		host = strings.Trim(host, "[]")
		a, err := netip.ParseAddr(host)
		if err != nil {
			t.Fatalf("ss line %q: %v", line, err)
		}
		pn, err := strconv.Atoi(port)
		if err != nil {
			t.Fatalf("ss line %q: %v", line, err)
		}
		list = append(list, dmTuple{p2pd.FamilyOf(a), proto, netip.AddrPortFrom(a.WithZone(zone), uint16(pn))})
	}
	return list
}

// dmSSAll is dmSS for TCP and UDP, sorted.
func dmSSAll(t *testing.T, h *testnet.Host) []string {
	t.Helper()
	var out []string
	for _, p := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
		for _, tu := range dmSS(t, h, p) {
			out = append(out, tu.String())
		}
	}
	slices.Sort(out)
	return out
}

// dmTuples returns the tuples of pipes, sorted.
func dmTuples(ps []*p2pd.Pipe) []string {
	var out []string
	for _, p := range ps {
		out = append(out, dmTuple{p.Family(), p.Proto(), p.LocalAddr()}.String())
	}
	slices.Sort(out)
	return out
}

// dmEchoCB answers every message with the same bytes.
var dmEchoCB = p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
	p.Send(bytes.Clone(msg), from)
})

// dmExchange sends msg to `to` over proto from inside h and returns the
// reply (one read, 2 s deadline).
func dmExchange(t *testing.T, h *testnet.Host, proto p2pd.Proto, to netip.AddrPort, msg string) (string, error) {
	t.Helper()
	var reply string
	var rerr error
	h.Do(t, func() {
		network := "tcp"
		if proto == p2pd.UDP {
			network = "udp"
		}
		c, err := net.DialTimeout(network, to.String(), 2*time.Second)
		if err != nil {
			rerr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			rerr = err
			return
		}
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		reply, rerr = string(buf[:n]), err
	})
	return reply, rerr
}

func dmExpectEcho(t *testing.T, h *testnet.Host, proto p2pd.Proto, to netip.AddrPort) {
	t.Helper()
	msg := fmt.Sprintf("hello %v %v", proto, to)
	got, err := dmExchange(t, h, proto, to, msg)
	if err != nil || got != msg {
		t.Errorf("echo %v %v: %q, %v", proto, to, got, err)
	}
}

// The seed's example, on dual-stack interfaces in a namespace: targets =
// [interface eth1, the IPv6 route of eth2 (bound, which is ignored)],
// ports = [10000, 30000-30100], protos = [TCP], af = any. Every listener is
// checked against ss (run inside the namespace) and against Lookup.
func TestListenAllSeedExample(t *testing.T) {
	dn := dmSetup(t)
	r, err := dn.eth2.Routes6[0].Bind("", 4444)
	if err != nil {
		t.Fatal(err)
	}
	ports := p2pd.Ports{p2pd.Port(10000), p2pd.Range(30000, 30100)}
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
	defer d.Close()
	var ps []*p2pd.Pipe
	dn.onSrv(t, func() {
		ps, err = d.ListenAll(context.Background(), []p2pd.Target{dn.eth1, r}, ports, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily)
	})
	if err != nil {
		t.Fatal(err)
	}
	// 102 ports × 1 proto × ((1 + 2×1) for eth1 + (0 + 2×1) for the IPv6 route)
	const want = 102 * 1 * ((1 + 2) + (0 + 2))
	if len(ps) != want || d.Len() != want || len(d.Listeners()) != want {
		t.Fatalf("opened %d (Len %d), want %d", len(ps), d.Len(), want)
	}
	ll1, ll2 := dn.srv.LinkLocal(t, "eth1"), dn.srv.LinkLocal(t, "eth2")
	addrs := []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("2001:db8:77::1"), ll1,
		netip.MustParseAddr("2001:db8:78::1"), ll2}
	var wantTuples []string
	for _, a := range addrs {
		for port := range ports.All() {
			tu := dmTuple{p2pd.FamilyOf(a), p2pd.TCP, netip.AddrPortFrom(a, port)}
			wantTuples = append(wantTuples, tu.String())
			if p := d.Lookup(tu.Family, p2pd.TCP, port, a); p == nil || p.LocalAddr() != tu.Addr {
				t.Fatalf("Lookup(%v) = %v", tu, p)
			}
		}
	}
	slices.Sort(wantTuples)
	if got := dmTuples(ps); !slices.Equal(got, wantTuples) {
		t.Fatalf("pipes:\n%v\nwant\n%v", got, wantTuples)
	}
	if got := dmSSAll(t, dn.srv); !slices.Equal(got, wantTuples) {
		t.Fatalf("ss shows %d listeners:\n%v\nwant %d", len(got), got, len(wantTuples))
	}
	// Every port is really served (P2PD binds only the first): echo on the
	// first, one middle and the last port of every address.
	for _, a := range addrs {
		for _, port := range []uint16{10000, 30050, 30100} {
			dmExpectEcho(t, dn.cli, p2pd.TCP, dn.fromCli(netip.AddrPortFrom(a, port)))
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dmSSAll(t, dn.srv); len(got) != 0 {
		t.Fatalf("after Close ss shows %v", got)
	}
}

// Echo from another namespace to every bound address (IPv4, IPv6 global,
// IPv6 link-local with zone) over TCP and UDP, for each target kind.
func TestListenAllEchoTargets(t *testing.T) {
	dn := dmSetup(t)
	for _, tc := range []struct {
		name    string
		targets []p2pd.Target
		n       int // addresses
	}{
		{"interface", []p2pd.Target{dn.eth1}, 3},
		{"route4", []p2pd.Target{dn.eth2.Routes4[0]}, 1},
		{"route6", []p2pd.Target{dn.eth2.Routes6[0]}, 2},
		{"pools", []p2pd.Target{dn.eth1.Routes6, dn.eth2.Routes4}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
			defer d.Close()
			var ps []*p2pd.Pipe
			var err error
			ports := p2pd.Ports{{20000, 20001}}
			dn.onSrv(t, func() {
				ps, err = d.ListenAll(context.Background(), tc.targets, ports, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != tc.n*2*2 {
				t.Fatalf("%d listeners, want %d", len(ps), tc.n*2*2)
			}
			if got, want := dmSSAll(t, dn.srv), dmTuples(ps); !slices.Equal(got, want) {
				t.Fatalf("ss: %v\nwant %v", got, want)
			}
			for _, p := range ps {
				dmExpectEcho(t, dn.cli, p.Proto(), dn.fromCli(p.LocalAddr()))
			}
		})
	}
}

// Every af choice, with and without ErrorOnAF, bound for real: eth1 is
// dual-stack, v4only has no IPv6 at all.
func TestListenAllFamilies(t *testing.T) {
	n := testnet.New(t)
	srv := n.AddHost("srv")
	srv.AddDummy(testnet.IfConfig{Name: "dual", Addrs: []string{"10.5.0.1/24", "2001:db8:5::1/64"}, NoDAD: true})
	srv.AddDummy(testnet.IfConfig{Name: "v4only", Addrs: []string{"10.6.0.1/24"}, NoIPv6: true})
	var dual, v4 *p2pd.Interface
	srv.Do(t, func() {
		var err error
		if dual, err = p2pd.InterfaceByName("dual"); err != nil {
			t.Fatal(err)
		}
		if v4, err = p2pd.InterfaceByName("v4only"); err != nil {
			t.Fatal(err)
		}
	})
	if len(dual.LinkLocals()) != 1 {
		t.Fatalf("dual has link-locals %v", dual.LinkLocals())
	}
	for _, tc := range []struct {
		af        p2pd.Family
		errorOnAF bool
		want      int // listeners; 0: ErrFamilyUnsupported
	}{
		{p2pd.AnyFamily, false, 1 + 3},
		{p2pd.AnyFamily, true, 1 + 3},
		{p2pd.IPv4, false, 1 + 1},
		{p2pd.IPv4, true, 1 + 1},
		{p2pd.IPv6, false, 0 + 2},
		{p2pd.IPv6, true, 0},
	} {
		t.Run(fmt.Sprintf("%v/error_on_af=%v", tc.af, tc.errorOnAF), func(t *testing.T) {
			d := &p2pd.Daemon{ErrorOnAF: tc.errorOnAF}
			defer d.Close()
			var ps []*p2pd.Pipe
			var err error
			srv.Do(t, func() {
				net.Interfaces()
				ps, err = d.ListenAll(context.Background(), []p2pd.Target{v4, dual}, p2pd.Ports{p2pd.Port(21000)}, []p2pd.Proto{p2pd.UDP}, tc.af)
			})
			if tc.want == 0 {
				if !errors.Is(err, p2pd.ErrFamilyUnsupported) || ps != nil {
					t.Fatalf("got %v, %v; want ErrFamilyUnsupported", ps, err)
				}
				if got := dmSSAll(t, srv); len(got) != 0 {
					t.Fatalf("failed call left %v", got)
				}
				return
			}
			if err != nil || len(ps) != tc.want {
				t.Fatalf("got %d, %v; want %d", len(ps), err, tc.want)
			}
			if got, want := dmSSAll(t, srv), dmTuples(ps); !slices.Equal(got, want) {
				t.Fatalf("ss: %v\nwant %v", got, want)
			}
			for _, p := range ps {
				if f := p2pd.FamilyOf(p.LocalAddr().Addr()); tc.af != p2pd.AnyFamily && f != tc.af {
					t.Errorf("listener %v of family %v", p.LocalAddr(), f)
				}
			}
		})
	}
}

// A real bind conflict: a port held by a plain socket. All or nothing closes
// everything; best effort keeps the rest; the error lists the failed bind.
func TestListenAllConflict(t *testing.T) {
	dn := dmSetup(t)
	var held net.Listener
	dn.onSrv(t, func() {
		var err error
		if held, err = net.Listen("tcp4", "10.77.0.1:20005"); err != nil {
			t.Fatal(err)
		}
	})
	defer held.Close()
	before := dmSSAll(t, dn.srv)
	ports := p2pd.Ports{{20004, 20006}}
	protos := []p2pd.Proto{p2pd.TCP, p2pd.UDP}
	check := func(t *testing.T, err error) {
		t.Helper()
		var le *p2pd.ListenError
		if !errors.As(err, &le) || !errors.Is(err, p2pd.ErrAddrInUse) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("err = %v, want a *ListenError with ErrAddrInUse", err)
		}
		if len(le.Failed) != 1 || le.Tried != 3*2*3 {
			t.Fatalf("ListenError %+v", le)
		}
		be := le.Failed[0]
		if be.Family != p2pd.IPv4 || be.Proto != p2pd.TCP || be.Addr != netip.MustParseAddrPort("10.77.0.1:20005") {
			t.Fatalf("failed bind %+v", be)
		}
		if !strings.Contains(err.Error(), "bind TCP 10.77.0.1:20005") {
			t.Fatalf("message %q", err)
		}
	}
	t.Run("all or nothing", func(t *testing.T) {
		d := &p2pd.Daemon{}
		defer d.Close()
		var ps []*p2pd.Pipe
		var err error
		dn.onSrv(t, func() {
			ps, err = d.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, ports, protos, p2pd.AnyFamily)
		})
		check(t, err)
		if ps != nil || d.Len() != 0 {
			t.Fatalf("kept %d listeners", d.Len())
		}
		if after := dmSSAll(t, dn.srv); !slices.Equal(after, before) {
			t.Fatalf("ss after the failed call: %v, before %v", after, before)
		}
		// The daemon is as it was: the same call without the conflict works.
		dn.onSrv(t, func() {
			ps, err = d.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, p2pd.Ports{p2pd.Port(20007)}, protos, p2pd.AnyFamily)
		})
		if err != nil || len(ps) != 6 {
			t.Fatalf("after the failure: %d, %v", len(ps), err)
		}
	})
	t.Run("best effort", func(t *testing.T) {
		// What is returned is not logged too: the caller would see it twice.
		var logged atomic.Int32
		log := slog.New(p2pd.NewLevelCounter(slog.LevelWarn, &logged))
		d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB, Logger: log}, BestEffort: true}
		defer d.Close()
		var ps []*p2pd.Pipe
		var err error
		dn.onSrv(t, func() {
			ps, err = d.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, ports, protos, p2pd.AnyFamily)
		})
		check(t, err)
		if len(ps) != 17 || d.Len() != 17 {
			t.Fatalf("kept %d (Len %d), want 17", len(ps), d.Len())
		}
		if d.Lookup(p2pd.IPv4, p2pd.TCP, 20005, netip.MustParseAddr("10.77.0.1")) != nil {
			t.Fatal("Lookup finds the failed listener")
		}
		if p := d.Lookup(p2pd.IPv4, p2pd.UDP, 20005, netip.MustParseAddr("10.77.0.1")); p == nil {
			t.Fatal("UDP 20005 missing")
		}
		dmExpectEcho(t, dn.cli, p2pd.TCP, netip.MustParseAddrPort("10.77.0.1:20006"))
		if n := logged.Load(); n != 0 {
			t.Fatalf("%d log records for a failure the call returned", n)
		}
	})
}

// A second live instance is refused with ErrAddrInUse (TCP and UDP); the
// first goes on serving.
func TestSecondInstanceRefused(t *testing.T) {
	dn := dmSetup(t)
	ports := p2pd.Ports{p2pd.Port(23000)}
	protos := []p2pd.Proto{p2pd.TCP, p2pd.UDP}
	d1, d2 := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}, &p2pd.Daemon{}
	defer d1.Close()
	defer d2.Close()
	var err1, err2 error
	dn.onSrv(t, func() {
		_, err1 = d1.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, ports, protos, p2pd.AnyFamily)
		_, err2 = d2.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, ports, protos, p2pd.AnyFamily)
	})
	if err1 != nil {
		t.Fatal(err1)
	}
	var le *p2pd.ListenError
	if !errors.Is(err2, p2pd.ErrAddrInUse) || !errors.As(err2, &le) || len(le.Failed) != 6 {
		t.Fatalf("second instance: %v", err2)
	}
	if d2.Len() != 0 {
		t.Fatalf("second instance holds %d", d2.Len())
	}
	for _, p := range d1.Listeners() {
		dmExpectEcho(t, dn.cli, p.Proto(), dn.fromCli(p.LocalAddr()))
	}
	// The same daemon asked twice for one address: refused before the OS.
	var err error
	dn.onSrv(t, func() {
		_, err = d1.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, ports, []p2pd.Proto{p2pd.UDP}, p2pd.IPv4)
	})
	if !errors.Is(err, p2pd.ErrAddrInUse) || !strings.Contains(err.Error(), "already listens") {
		t.Fatalf("same daemon twice: %v", err)
	}
}

// Restart three times on the same ports right after Close, with connections
// that leave TIME_WAIT behind.
func TestRestartSamePorts(t *testing.T) {
	dn := dmSetup(t)
	ports := p2pd.Ports{{24000, 24002}}
	for i := range 3 {
		d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
		var ps []*p2pd.Pipe
		var err error
		dn.onSrv(t, func() {
			ps, err = d.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, ports, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
		})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if len(ps) != 3*3*2 {
			t.Fatalf("round %d: %d listeners", i, len(ps))
		}
		for _, p := range ps {
			dmExpectEcho(t, dn.cli, p.Proto(), dn.fromCli(p.LocalAddr()))
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := d.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, ports, []p2pd.Proto{p2pd.TCP}, p2pd.IPv4); !errors.Is(err, p2pd.ErrDaemonClosed) {
			t.Fatalf("ListenAll after Close: %v", err)
		}
	}
}

const dmChildEnv = "P2PD_DAEMON_TEST_CHILD"

// A crashed instance (a child process that binds and accepts, killed with
// SIGKILL while connections are open) does not block an immediate restart.
func TestCrashedInstanceDoesNotBlock(t *testing.T) {
	if os.Getenv(dmChildEnv) == "1" {
		dmChild()
		return
	}
	dn := dmSetup(t)
	cmd := dn.srv.Command(os.Args[0], "-test.run=^TestCrashedInstanceDoesNotBlock$", "-test.count=1")
	cmd.Env = append(os.Environ(), dmChildEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "READY\n" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child not ready after 20 s")
	}
	// Open connections to the child and leave them open.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dn.cli.Do(t, func() {
		for _, a := range []string{"10.77.0.1:25000", "[2001:db8:77::1]:25001"} {
			c, err := net.DialTimeout("tcp", a, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			c.Write([]byte("x"))
		}
	})
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 4)
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "x" {
			t.Fatalf("child echo: %q, %v", buf[:n], err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	// At once, on the same ports.
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
	defer d.Close()
	var ps []*p2pd.Pipe
	dn.onSrv(t, func() {
		ps, err = d.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, p2pd.Ports{{25000, 25001}}, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
	})
	if err != nil {
		t.Fatalf("restart after a crash: %v", err)
	}
	for _, p := range ps {
		dmExpectEcho(t, dn.cli, p.Proto(), dn.fromCli(p.LocalAddr()))
	}
}

// dmChild is the crashing instance: it runs inside srv (ip netns exec),
// listens, says READY and serves until killed (bounded: 60 s).
func dmChild() {
	eth1, err := p2pd.InterfaceByName("eth1")
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
	if _, err := d.ListenAll(context.Background(), []p2pd.Target{eth1}, p2pd.Ports{{25000, 25001}}, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("READY")
	time.Sleep(60 * time.Second)
	os.Exit(2)
}

// ListenSpecific on the wildcard and the loopback, both families.
func TestListenSpecificWildcardLoopback(t *testing.T) {
	dn := dmSetup(t)
	var specs []p2pd.Specific
	for _, f := range []p2pd.Family{p2pd.IPv4, p2pd.IPv6} {
		for _, h := range []struct {
			host string
			port uint16
		}{{"*", 26000}, {"localhost", 26001}} {
			r, err := p2pd.Route{Family: f}.Bind(h.host, h.port)
			if err != nil {
				t.Fatal(err)
			}
			for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
				specs = append(specs, p2pd.Specific{Route: r, Proto: proto})
			}
		}
	}
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
	defer d.Close()
	var ps []*p2pd.Pipe
	var err error
	dn.onSrv(t, func() { ps, err = d.ListenSpecific(context.Background(), specs) })
	if err != nil || len(ps) != 8 {
		t.Fatalf("ListenSpecific: %d, %v", len(ps), err)
	}
	want := []string{}
	for _, a := range []string{"0.0.0.0:26000", "[::]:26000", "127.0.0.1:26001", "[::1]:26001"} {
		ap := netip.MustParseAddrPort(a)
		for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
			want = append(want, dmTuple{p2pd.FamilyOf(ap.Addr()), proto, ap}.String())
			if d.Lookup(p2pd.FamilyOf(ap.Addr()), proto, ap.Port(), ap.Addr()) == nil {
				t.Errorf("Lookup %v %v", proto, ap)
			}
		}
	}
	slices.Sort(want)
	if got := dmSSAll(t, dn.srv); !slices.Equal(got, want) {
		t.Fatalf("ss: %v\nwant %v", got, want)
	}
	for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
		// The wildcard serves every address of srv, link-local included.
		for _, a := range []netip.AddrPort{
			netip.MustParseAddrPort("10.77.0.1:26000"), netip.MustParseAddrPort("10.78.0.1:26000"),
			netip.MustParseAddrPort("[2001:db8:77::1]:26000"),
			dn.fromCli(netip.AddrPortFrom(dn.srv.LinkLocal(t, "eth2"), 26000)),
		} {
			dmExpectEcho(t, dn.cli, proto, a)
		}
		// The loopback only from inside srv.
		dmExpectEcho(t, dn.srv, proto, netip.MustParseAddrPort("127.0.0.1:26001"))
		dmExpectEcho(t, dn.srv, proto, netip.MustParseAddrPort("[::1]:26001"))
		if _, err := dmExchange(t, dn.cli, proto, netip.MustParseAddrPort("10.77.0.1:26001"), "x"); err == nil {
			t.Errorf("%v loopback listener reached from outside", proto)
		}
	}
	// A specific address under the TCP wildcard conflicts (Linux).
	r, _ := dn.eth1.Routes4[0].Bind("", 26000)
	dn.onSrv(t, func() { _, err = d.AddListener(context.Background(), p2pd.TCP, r) })
	if !errors.Is(err, p2pd.ErrAddrInUse) {
		t.Fatalf("specific under wildcard: %v", err)
	}
	// An unbound route gets its default address and port 0.
	var p *p2pd.Pipe
	dn.onSrv(t, func() { p, err = d.AddListener(context.Background(), p2pd.UDP, dn.eth1.Routes4[0]) })
	if err != nil || p.LocalAddr().Addr() != netip.MustParseAddr("10.77.0.1") || p.LocalAddr().Port() == 0 {
		t.Fatalf("unbound route: %v, %v", p, err)
	}
	if _, err := d.ListenSpecific(context.Background(), nil); !errors.Is(err, p2pd.ErrInvalid) {
		t.Fatalf("empty ListenSpecific: %v", err)
	}
	if _, err := d.ListenSpecific(context.Background(), []p2pd.Specific{{Route: r, Proto: 0}}); !errors.Is(err, p2pd.ErrInvalid) {
		t.Fatalf("bad proto: %v", err)
	}
}

// Port 0: the OS chooses and Lookup finds the listener under the real port.
func TestPortZeroLookup(t *testing.T) {
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
	defer d.Close()
	lo4, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	p, err := d.AddListener(context.Background(), p2pd.TCP, lo4)
	if err != nil {
		t.Fatal(err)
	}
	port := p.LocalAddr().Port()
	if port == 0 || p.Route().Bound.Port() != port {
		t.Fatalf("port %d, route %v", port, p.Route())
	}
	if got := d.Lookup(p2pd.IPv4, p2pd.TCP, port, lo4.Bound.Addr()); got != p {
		t.Fatalf("Lookup = %v, want %v", got, p)
	}
	if got := d.Lookup(p2pd.IPv4, p2pd.TCP, 0, lo4.Bound.Addr()); got != nil {
		t.Fatalf("Lookup by port 0 = %v", got)
	}
	if got := d.Select(p2pd.IPv4, p2pd.TCP, 0); len(got) != 1 || got[0] != p {
		t.Fatalf("Select = %v", got)
	}
	c, err := net.Dial("tcp", p.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// ListenAll with port 0 on the loopback route, two protocols: each
	// gets its own port.
	lo := &p2pd.Interface{Name: "lo", Flags: net.FlagUp | net.FlagLoopback, Addrs: []p2pd.IfAddr{{Addr: netip.MustParseAddr("127.0.0.1"), Bits: 8}}}
	if err := lo.Resolve(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	ps, err := d.ListenAll(context.Background(), []p2pd.Target{lo}, p2pd.Ports{p2pd.Port(0)}, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.IPv4)
	if err != nil || len(ps) != 2 {
		t.Fatalf("ListenAll port 0: %v, %v", ps, err)
	}
	for _, q := range ps {
		if q.LocalAddr().Port() == 0 || d.Lookup(p2pd.IPv4, q.Proto(), q.LocalAddr().Port(), q.LocalAddr().Addr()) != q {
			t.Fatalf("%v not found under its port", q.LocalAddr())
		}
	}
	if d.Len() != 3 {
		t.Fatalf("Len = %d", d.Len())
	}
	// A listener closed by its owner leaves the daemon.
	p.Close()
	<-p.Done() // Close does not wait
	if d.Lookup(p2pd.IPv4, p2pd.TCP, port, lo4.Bound.Addr()) != nil || d.Len() != 2 {
		t.Fatalf("closed listener still listed (Len %d)", d.Len())
	}
}

// dmLoopEcho sends msg over proto to a loopback address and returns the reply.
func dmLoopEcho(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// SetOnMsg swaps the callback of every listener and of open connections.
func TestSetOnMsg(t *testing.T) {
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
	defer d.Close()
	var specs []p2pd.Specific
	for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
		r, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
		specs = append(specs, p2pd.Specific{Route: r, Proto: proto})
	}
	ps, err := d.ListenSpecific(context.Background(), specs)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := net.Dial("tcp", ps[0].LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	uc, err := net.Dial("udp", ps[1].LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for _, c := range []net.Conn{tc, uc} {
		if got := dmLoopEcho(t, c, "abc"); got != "abc" {
			t.Fatalf("before: %q", got)
		}
	}
	upper := p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		p.Send(bytes.ToUpper(msg), from)
	})
	if err := d.SetOnMsg(upper); err != nil {
		t.Fatal(err)
	}
	for _, c := range []net.Conn{tc, uc} { // the TCP connection was open before the swap
		if got := dmLoopEcho(t, c, "abc"); got != "ABC" {
			t.Fatalf("after: %q", got)
		}
	}
	// Listeners opened later get the new callback too.
	r, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	p, err := d.AddListener(context.Background(), p2pd.UDP, r)
	if err != nil {
		t.Fatal(err)
	}
	uc2, err := net.Dial("udp", p.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc2.Close()
	if got := dmLoopEcho(t, uc2, "xyz"); got != "XYZ" {
		t.Fatalf("later listener: %q", got)
	}
	d.Close()
	if err := d.SetOnMsg(dmEchoCB); !errors.Is(err, p2pd.ErrDaemonClosed) {
		t.Fatalf("SetOnMsg after Close: %v", err)
	}
}

// dmSlowDaemon returns a daemon on loopback TCP whose callback answers
// after release is closed; started tells when a callback runs.
func dmSlowDaemon(t *testing.T) (d *p2pd.Daemon, addr string, started chan struct{}, release chan struct{}) {
	t.Helper()
	started, release = make(chan struct{}, 8), make(chan struct{})
	d = &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		started <- struct{}{}
		<-release
		p.Send([]byte("done:"+string(msg)), from)
	})}}
	r, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	p, err := d.AddListener(context.Background(), p2pd.TCP, r)
	if err != nil {
		t.Fatal(err)
	}
	return d, p.LocalAddr().String(), started, release
}

// dmBusyDaemon returns a slow daemon whose callback is running for a
// message sent on c; closing release lets it finish.
func dmBusyDaemon(t *testing.T) (d *p2pd.Daemon, addr string, c net.Conn, release chan struct{}) {
	t.Helper()
	d, addr, started, release := dmSlowDaemon(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte("m"))
	<-started
	return d, addr, c, release
}

func TestShutdownLetsInFlightFinish(t *testing.T) {
	d, addr, c, release := dmBusyDaemon(t)
	defer d.Close()
	shut := make(chan error, 1)
	go func() { shut <- d.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a callback runs", err)
	case <-time.After(200 * time.Millisecond):
	}
	// New connections are refused once Shutdown began.
	if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c2.Close()
		t.Error("dial during Shutdown succeeded")
	}
	close(release)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "done:m" {
		t.Fatalf("in-flight reply: %q, %v", buf[:n], err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if _, err := d.AddListener(context.Background(), p2pd.TCP, p2pd.Route{Family: p2pd.IPv4}); !errors.Is(err, p2pd.ErrDaemonClosed) {
		t.Fatalf("after Shutdown: %v", err)
	}
	if d.Len() != 0 || len(d.Listeners()) != 0 {
		t.Fatal("listeners after Shutdown")
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestShutdownDeadline(t *testing.T) {
	d, addr, _, release := dmBusyDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err := d.Shutdown(ctx)
	if el := time.Since(t0); !errors.Is(err, context.DeadlineExceeded) || el > 2*time.Second {
		t.Fatalf("Shutdown = %v after %v, want DeadlineExceeded at about 100ms", err, el)
	}
	// The listener socket is closed at once.
	if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c2.Close()
		t.Error("dial after a timed-out Shutdown succeeded")
	}
	close(release)
	// A second Shutdown waits for the callback that was still running.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := d.Shutdown(ctx2); err != nil {
		t.Fatal(err)
	}
}

func TestCloseAtOnce(t *testing.T) {
	d, _, c, release := dmBusyDaemon(t)
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	// The connection is closed at once, before the callback returns.
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 4)); err == nil {
		t.Fatal("connection still open after Close")
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := d.ListenSpecific(context.Background(), []p2pd.Specific{{Route: p2pd.Route{Family: p2pd.IPv4}, Proto: p2pd.TCP}}); !errors.Is(err, p2pd.ErrDaemonClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// Close racing with calls that open listeners leaves no socket behind.
func TestCloseDuringListen(t *testing.T) {
	for range 20 {
		d := &p2pd.Daemon{}
		var wg sync.WaitGroup
		var ps []*p2pd.Pipe
		var err error
		wg.Go(func() {
			lo, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
			specs := slices.Repeat([]p2pd.Specific{{Route: lo, Proto: p2pd.UDP}}, 50)
			ps, err = d.ListenSpecific(context.Background(), specs)
		})
		d.Close()
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.Shutdown(ctx); err != nil { // waits for what Close stopped
			t.Fatal(err)
		}
		cancel()
		if err == nil {
			// The call finished before Close: Close closed its listeners.
			for _, p := range ps {
				select {
				case <-p.Done():
				default:
					t.Fatalf("listener %v open after Close", p.LocalAddr())
				}
			}
		} else if !errors.Is(err, p2pd.ErrDaemonClosed) {
			t.Fatal(err)
		}
		if d.Len() != 0 {
			t.Fatal("listeners after Close")
		}
	}
}

// A cancelled context closes what the call opened.
func TestListenCancelled(t *testing.T) {
	d := &p2pd.Daemon{}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	lo, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	if _, err := d.AddListener(ctx, p2pd.UDP, lo); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if d.Len() != 0 {
		t.Fatal("listener kept")
	}
	// The guard applies to ListenSpecific too.
	d.MaxListeners = 1
	specs := []p2pd.Specific{{Route: lo, Proto: p2pd.UDP}, {Route: lo, Proto: p2pd.TCP}}
	var le *p2pd.LimitError
	if _, err := d.ListenSpecific(context.Background(), specs); !errors.As(err, &le) || le.Want != 2 {
		t.Fatalf("guard: %v", err)
	}
}
