package testnet

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRequirement(t *testing.T) {
	tests := []struct {
		name   string
		goos   string
		euid   int
		haveIP bool
		ci     bool
		skip   bool // a message is returned
		fatal  bool
		want   string // in the message
	}{
		{name: "ok", goos: "linux", euid: 0, haveIP: true},
		{name: "ok in CI", goos: "linux", euid: 0, haveIP: true, ci: true},
		{name: "not root", goos: "linux", euid: 1000, haveIP: true, skip: true, want: "sudo -E env PATH=$PATH go test ./..."},
		{name: "not root in CI", goos: "linux", euid: 1000, haveIP: true, ci: true, skip: true, fatal: true, want: "needs root"},
		{name: "no ip", goos: "linux", euid: 0, skip: true, want: "iproute2"},
		{name: "no ip in CI", goos: "linux", euid: 0, ci: true, skip: true, fatal: true, want: "iproute2"},
		{name: "darwin", goos: "darwin", euid: 0, haveIP: true, skip: true, want: "need Linux"},
		// Other systems are skipped even in CI: they can never run these tests.
		{name: "windows in CI", goos: "windows", euid: -1, ci: true, skip: true, want: "need Linux"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, fatal := requirement(tt.goos, tt.euid, tt.haveIP, tt.ci)
			if (msg != "") != tt.skip || fatal != tt.fatal {
				t.Fatalf("requirement = (%q, %v), want skip %v, fatal %v", msg, fatal, tt.skip, tt.fatal)
			}
			if !strings.Contains(msg, tt.want) || (msg != "" && !strings.HasPrefix(msg, "testnet: ")) {
				t.Errorf("message %q does not contain %q or lacks the prefix", msg, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		c    IfConfig
		ok   bool
	}{
		{"plain", IfConfig{Name: "eth1"}, true},
		{"dual", IfConfig{Name: "eth1", Addrs: []string{"10.0.0.1/24", "fd00::1/64"}}, true},
		{"15 chars", IfConfig{Name: "abcdefghijklmno"}, true},
		{"16 chars", IfConfig{Name: "abcdefghijklmnop"}, false},
		{"empty", IfConfig{}, false},
		{"slash", IfConfig{Name: "a/b"}, false},
		{"no prefix length", IfConfig{Name: "eth1", Addrs: []string{"10.0.0.1"}}, false},
		{"zoned", IfConfig{Name: "eth1", Addrs: []string{"fe80::1%eth1/64"}}, false},
		{"v6 on NoIPv6", IfConfig{Name: "eth1", Addrs: []string{"fd00::1/64"}, NoIPv6: true}, false},
		{"v4 on NoIPv6", IfConfig{Name: "eth1", Addrs: []string{"10.0.0.1/8"}, NoIPv6: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.validate()
			if (err == nil) != tt.ok {
				t.Fatalf("validate(%+v) = %v, want ok %v", tt.c, err, tt.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "testnet: ") {
				t.Errorf("error %q lacks the prefix", err)
			}
		})
	}
}

// Captured from `ip -j addr show dev v1` right after `ip link set v1 up`.
const tentativeJSON = `[{},{"ifindex":2,"link_index":2,"ifname":"v1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_netnsid":0,"addr_info":[{"family":"inet","local":"10.1.1.1","prefixlen":24,"scope":"global","label":"v1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"2001:db8::1","prefixlen":64,"scope":"global","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::90df:b9ff:fe25:c1b6","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]`

func TestParseIPAddrAndDADState(t *testing.T) {
	ifs, err := parseIPAddr([]byte(tentativeJSON))
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "v1" || ifs[0].Index != 2 || !ifs[0].HasFlag("LOWER_UP") || ifs[0].MTU != 1500 {
		t.Fatalf("parsed %+v", ifs)
	}
	want := []IfAddr{
		{Prefix: netip.MustParsePrefix("10.1.1.1/24"), Scope: "global"},
		{Prefix: netip.MustParsePrefix("2001:db8::1/64"), Scope: "global", Tentative: true},
		{Prefix: netip.MustParsePrefix("fe80::90df:b9ff:fe25:c1b6/64"), Scope: "link", Tentative: true},
	}
	if !slices.Equal(ifs[0].Addrs, want) {
		t.Fatalf("addrs %+v, want %+v", ifs[0].Addrs, want)
	}
	i := ifs[0]
	if pending, err := dadState(i, true); err != nil || !strings.Contains(pending, "2001:db8::1/64") {
		t.Errorf("tentative: dadState = %q, %v", pending, err)
	}
	i.Addrs = slices.Clone(want)
	i.Addrs[1].Tentative, i.Addrs[2].Tentative = false, false
	if pending, err := dadState(i, true); pending != "" || err != nil {
		t.Errorf("done: dadState = %q, %v", pending, err)
	}
	noLL := i
	noLL.Addrs = i.Addrs[:2]
	if pending, _ := dadState(noLL, true); !strings.Contains(pending, "link-local") {
		t.Errorf("no link-local: dadState = %q", pending)
	}
	if pending, _ := dadState(noLL, false); pending != "" {
		t.Errorf("no link-local, not needed: dadState = %q", pending)
	}
	i.Addrs[1].DADFailed = true
	if _, err := dadState(i, true); err == nil || !strings.Contains(err.Error(), "DAD failed") {
		t.Errorf("dadfailed: err = %v", err)
	}
	if _, err := parseIPAddr([]byte("not json")); err == nil {
		t.Error("parsed garbage")
	}
}

func TestNSName(t *testing.T) {
	name := nsName(4026531836, 4242, 7, "host a/b")
	if name != "p2pdt-4026531836-4242-7-host_a_b" {
		t.Fatalf("nsName = %q", name)
	}
	ns, pid, ok := parseNSName(name)
	if !ok || ns != 4026531836 || pid != 4242 {
		t.Fatalf("parseNSName(%q) = %d, %d, %v", name, ns, pid, ok)
	}
	for _, bad := range []string{"p2pdt", "p2pdt-x-1-1-a", "other-1-2-3-a", "p2pdt-1-0-1-a", "p2pdt-1-2-a"} {
		if _, _, ok := parseNSName(bad); ok {
			t.Errorf("parseNSName(%q) accepted", bad)
		}
	}
}

// addrsOf returns ifc's addresses by family ("inet" or "inet6").
func addrsOf(ifc Iface, family string) []netip.Prefix {
	var ps []netip.Prefix
	for _, a := range ifc.Addrs {
		if a.Prefix.Addr().Is6() == (family == "inet6") {
			ps = append(ps, a.Prefix)
		}
	}
	return ps
}

// checkReady fails unless ifc is up with carrier, holds every address in
// want, has a link-local address and nothing tentative.
func checkReady(t *testing.T, ifc Iface, want ...string) {
	t.Helper()
	if !ifc.HasFlag("UP") || !ifc.HasFlag("LOWER_UP") {
		t.Errorf("%s: flags %v, want UP and LOWER_UP", ifc.Name, ifc.Flags)
	}
	for _, w := range want {
		if !slices.ContainsFunc(ifc.Addrs, func(a IfAddr) bool { return a.Prefix.String() == w }) {
			t.Errorf("%s: address %s missing from %+v", ifc.Name, w, ifc.Addrs)
		}
	}
	haveLL := false
	for _, a := range ifc.Addrs {
		if a.Tentative || a.DADFailed {
			t.Errorf("%s: %s still tentative or failed after return", ifc.Name, a.Prefix)
		}
		haveLL = haveLL || a.Prefix.Addr().IsLinkLocalUnicast()
	}
	if !haveLL {
		t.Errorf("%s: no link-local address in %+v", ifc.Name, ifc.Addrs)
	}
}

// exchange listens on listen:0 inside srv, dials it from inside cli at
// dial (same port), swaps a message each way and checks the server saw
// the client as from (if valid).
func exchange(t *testing.T, srv *Host, listen netip.Addr, cli *Host, dial, from netip.Addr) {
	t.Helper()
	var ln net.Listener
	srv.Do(t, func() {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(listen, 0).String())
		if err != nil {
			t.Fatalf("listen on %s in %s: %v", listen, srv.Name, err)
		}
	})
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).AddrPort().Port()

	type result struct {
		remote netip.Addr
		err    error
	}
	res := make(chan result, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			res <- result{err: err}
			return
		}
		_, err = c.Write(append([]byte("pong:"), buf...))
		res <- result{remote: c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(), err: err}
	}()
	defer wg.Wait()

	var c net.Conn
	target := netip.AddrPortFrom(dial, port).String()
	cli.Do(t, func() {
		var err error
		c, err = net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			ln.Close() // unblock Accept
			t.Fatalf("dial %s from %s: %v", target, cli.Name, err)
		}
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write to %s: %v", target, err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "pong:ping" {
		t.Fatalf("read from %s: %q, %v", target, got, err)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("server on %s: %v", listen, r.err)
	}
	if from.IsValid() && r.remote.WithZone("") != from.WithZone("") {
		t.Errorf("server saw client as %s, want %s", r.remote, from)
	}
}

func TestDualStackLink(t *testing.T) {
	n := New(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	start := time.Now()
	n.Link(a, IfConfig{Name: "ethA", Addrs: []string{"10.77.0.1/24", "2001:db8:77::1/64"}},
		b, IfConfig{Name: "ethB", Addrs: []string{"10.77.0.2/24", "2001:db8:77::2/64"}})
	took := time.Since(start)
	// Read state before anything else can let DAD finish on its own.
	ia, ib := a.Interface(t, "ethA"), b.Interface(t, "ethB")
	checkReady(t, ia, "10.77.0.1/24", "2001:db8:77::1/64")
	checkReady(t, ib, "10.77.0.2/24", "2001:db8:77::2/64")
	// DAD sends one probe and waits RetransTimer (1 s): Link must have waited.
	if took < 700*time.Millisecond {
		t.Errorf("Link took %v: too fast to have waited for DAD", took)
	}
	t.Logf("Link with DAD took %v", took)

	// Nothing leaked into the root namespace.
	if out, err := exec.Command("ip", "-j", "link").Output(); err != nil || bytes.Contains(out, []byte(`"ethA"`)) || bytes.Contains(out, []byte(`"ethB"`)) {
		t.Errorf("root namespace has a veth end or ip failed (%v): %s", err, out)
	}

	llA, llB := a.LinkLocal(t, "ethA"), b.LinkLocal(t, "ethB")
	if llA.Zone() != "ethA" || !llA.IsLinkLocalUnicast() {
		t.Fatalf("LinkLocal = %s", llA)
	}
	for _, tc := range []struct {
		name                 string
		listen, dial, client netip.Addr
	}{
		{"ipv4", netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")},
		{"ipv6", netip.MustParseAddr("2001:db8:77::1"), netip.MustParseAddr("2001:db8:77::1"), netip.MustParseAddr("2001:db8:77::2")},
		// A's link-local, reached through B's own interface.
		{"link-local", llA, llA.WithZone("ethB"), llB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exchange(t, a, tc.listen, b, tc.dial, tc.client)
		})
	}
}

func TestInterfaceKinds(t *testing.T) {
	n := New(t)
	a, b := n.AddHost("a"), n.AddHost("b")

	t.Run("NoIPv6", func(t *testing.T) {
		n.Link(a, IfConfig{Name: "v4a", Addrs: []string{"10.1.0.1/24"}, NoIPv6: true},
			b, IfConfig{Name: "v4b", Addrs: []string{"10.1.0.2/24"}, NoIPv6: true})
		ifc := a.Interface(t, "v4a")
		if v6 := addrsOf(ifc, "inet6"); len(v6) != 0 {
			t.Errorf("IPv6 addresses on a NoIPv6 interface: %v", v6)
		}
		if v4 := addrsOf(ifc, "inet"); len(v4) != 1 || v4[0].String() != "10.1.0.1/24" {
			t.Errorf("IPv4 addresses %v", v4)
		}
		exchange(t, a, netip.MustParseAddr("10.1.0.1"), b, netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2"))
	})

	t.Run("IPv6 only", func(t *testing.T) {
		n.Link(a, IfConfig{Name: "v6a", Addrs: []string{"fd00:6::1/64"}},
			b, IfConfig{Name: "v6b", Addrs: []string{"fd00:6::2/64"}})
		ifc := a.Interface(t, "v6a")
		checkReady(t, ifc, "fd00:6::1/64")
		if v4 := addrsOf(ifc, "inet"); len(v4) != 0 {
			t.Errorf("IPv4 addresses on an IPv6-only interface: %v", v4)
		}
		if v6 := addrsOf(ifc, "inet6"); len(v6) != 2 {
			t.Errorf("want a global and a link-local address, got %v", v6)
		}
	})

	t.Run("Down", func(t *testing.T) {
		a.AddDummy(IfConfig{Name: "down0", Addrs: []string{"10.2.0.1/24", "fd00:2::1/64"}, Down: true})
		ifc := a.Interface(t, "down0")
		if ifc.HasFlag("UP") {
			t.Errorf("Down interface has flags %v", ifc.Flags)
		}
		if got := len(ifc.Addrs); got != 2 {
			t.Errorf("Down interface has addresses %+v, want its 2", ifc.Addrs)
		}
	})

	t.Run("peer Down then SetUp", func(t *testing.T) {
		n.Link(a, IfConfig{Name: "nc0", Addrs: []string{"fd00:3::1/64"}},
			b, IfConfig{Name: "nc1", Addrs: []string{"fd00:3::2/64"}, Down: true})
		if ifc := a.Interface(t, "nc0"); !ifc.HasFlag("UP") || !ifc.HasFlag("NO-CARRIER") {
			t.Errorf("up end of a link whose peer is down has flags %v", ifc.Flags)
		}
		b.SetUp(t, "nc1")
		checkReady(t, a.Interface(t, "nc0"), "fd00:3::1/64")
		checkReady(t, b.Interface(t, "nc1"), "fd00:3::2/64")
	})

	t.Run("AddDummy", func(t *testing.T) {
		a.AddDummy(IfConfig{Name: "dummy0", Addrs: []string{"192.0.2.1/24", "2001:db8:d::1/64"}})
		checkReady(t, a.Interface(t, "dummy0"), "192.0.2.1/24", "2001:db8:d::1/64")
		// Local traffic to the dummy's addresses works inside the host.
		for _, s := range []string{"192.0.2.1", "2001:db8:d::1"} {
			addr := netip.MustParseAddr(s)
			exchange(t, a, addr, a, addr, addr)
		}
	})

	t.Run("NoDAD and AddAddr", func(t *testing.T) {
		n.Link(a, IfConfig{Name: "nd0", Addrs: []string{"fd00:4::1/64"}, NoDAD: true},
			b, IfConfig{Name: "nd1", Addrs: []string{"fd00:4::2/64"}, NoDAD: true})
		checkReady(t, a.Interface(t, "nd0"), "fd00:4::1/64")
		out, err := a.Command("cat", "/proc/sys/net/ipv6/conf/nd0/accept_dad").Output()
		if err != nil || string(bytes.TrimSpace(out)) != "0" {
			t.Errorf("accept_dad on nd0 = %q, %v; want 0", out, err)
		}
		// With DAD on, AddAddr returns once the address is usable.
		b.Sysctl(t, "net.ipv6.conf.nd1.accept_dad", "1")
		b.AddAddr(t, "nd1", "fd00:5::2/64", false)
		checkReady(t, b.Interface(t, "nd1"), "fd00:5::2/64")
		b.DelAddr(t, "nd1", "fd00:5::2/64")
		if slices.Contains(addrsOf(b.Interface(t, "nd1"), "inet6"), netip.MustParsePrefix("fd00:5::2/64")) {
			t.Error("DelAddr left the address")
		}
	})
}

func TestDoSwitches(t *testing.T) {
	n := New(t)
	a := n.AddHost("a")
	a.AddDummy(IfConfig{Name: "inner0", NoIPv6: true})

	names := func() []string {
		ifs, err := net.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, i := range ifs {
			s = append(s, i.Name)
		}
		slices.Sort(s)
		return s
	}
	root := names()
	if slices.Contains(root, "inner0") {
		t.Fatalf("root namespace already has inner0: %v", root)
	}
	var inside []string
	a.Do(t, func() { inside = names() })
	if want := []string{"inner0", "lo"}; !slices.Equal(inside, want) {
		t.Errorf("interfaces inside Do = %v, want %v", inside, want)
	}
	if after := names(); !slices.Equal(after, root) {
		t.Errorf("interfaces after Do = %v, want the root's %v", after, root)
	}
}

func TestCleanup(t *testing.T) {
	Require(t)
	var made []string
	t.Run("inner", func(t *testing.T) {
		n := New(t)
		a, b := n.AddHost("a"), n.AddHost("b")
		n.Link(a, IfConfig{Name: "c0", NoDAD: true}, b, IfConfig{Name: "c1", NoDAD: true})
		made = []string{a.NS, b.NS}
		out, err := exec.Command("ip", "netns", "list").Output()
		if err != nil || !bytes.Contains(out, []byte(a.NS)) {
			t.Fatalf("ip netns list does not show %s (%v): %s", a.NS, err, out)
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range made {
		if bytes.Contains(out, []byte(ns)) {
			t.Errorf("namespace %s survived its test: %s", ns, out)
		}
	}
	if len(made) != 2 {
		t.Fatalf("subtest made %v", made)
	}
}
