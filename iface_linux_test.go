package p2pd_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/testnet"
)

// ipAddrJSON is what `ip -j addr` prints: the independent oracle.
type ipAddrJSON struct {
	Index    int      `json:"ifindex"`
	Name     string   `json:"ifname"`
	Flags    []string `json:"flags"`
	MTU      int      `json:"mtu"`
	LinkType string   `json:"link_type"`
	Address  string   `json:"address"`
	AddrInfo []struct {
		Family     string `json:"family"`
		Local      string `json:"local"`
		PrefixLen  int    `json:"prefixlen"`
		Tentative  bool   `json:"tentative"`
		DADFailed  bool   `json:"dadfailed"`
		Deprecated bool   `json:"deprecated"`
		Temporary  bool   `json:"temporary"`
		Dynamic    bool   `json:"dynamic"`
		NoDAD      bool   `json:"nodad"`
		Optimistic bool   `json:"optimistic"`
	} `json:"addr_info"`
}

func kernelInterfaces(t *testing.T, h *testnet.Host) []ipAddrJSON {
	t.Helper()
	var out []ipAddrJSON
	if err := json.Unmarshal(h.IP(t, "-j", "addr"), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// oracleAddrs turns ip's addr_info into the library's form.
func oracleAddrs(t *testing.T, k ipAddrJSON) []string {
	var out []string
	for _, a := range k.AddrInfo {
		ip := netip.MustParseAddr(a.Local)
		if ip.Is6() && ip.IsLinkLocalUnicast() {
			ip = ip.WithZone(k.Name)
		}
		var f p2pd.AddrFlags
		for _, m := range []struct {
			on bool
			f  p2pd.AddrFlags
		}{
			{a.Tentative, p2pd.AddrTentative}, {a.DADFailed, p2pd.AddrDADFailed},
			{a.Deprecated, p2pd.AddrDeprecated}, {a.Temporary, p2pd.AddrTemporary},
			{!a.Dynamic, p2pd.AddrPermanent}, {a.NoDAD, p2pd.AddrNoDAD}, {a.Optimistic, p2pd.AddrOptimistic},
		} {
			if m.on {
				f |= m.f
			}
		}
		out = append(out, p2pd.IfAddr{Addr: ip, Bits: a.PrefixLen, Flags: f}.String())
	}
	slices.Sort(out)
	return out
}

// buildHost makes a host with every kind of interface and address state the
// library must report.
func buildHost(t *testing.T) (h, peer *testnet.Host) {
	n := testnet.New(t)
	h, peer = n.AddHost("h"), n.AddHost("peer")
	// Dual stack, DAD on: Link waits for it. 10.77.0.5 is an IPv4 secondary.
	n.Link(h, testnet.IfConfig{Name: "dual0", Addrs: []string{"10.77.0.1/24", "10.77.0.5/24", "2001:db8:77::1/64", "fd77::1/64"}},
		peer, testnet.IfConfig{Name: "p0", Addrs: []string{"10.77.0.2/24", "2001:db8:77::2/64", "2001:db8:77::dd/64"}, NoDAD: true})
	n.Link(h, testnet.IfConfig{Name: "v4only", NoIPv6: true, Addrs: []string{"10.78.0.1/24"}},
		peer, testnet.IfConfig{Name: "p1", NoIPv6: true, Addrs: []string{"10.78.0.2/24"}})
	n.Link(h, testnet.IfConfig{Name: "v6only", NoDAD: true, Addrs: []string{"2001:db8:79::1/64"}},
		peer, testnet.IfConfig{Name: "p2", NoDAD: true, Addrs: []string{"2001:db8:79::2/64"}})
	h.AddDummy(testnet.IfConfig{Name: "down0", Down: true, Addrs: []string{"10.80.0.1/24"}})
	// No carrier (peer down): an address added here stays tentative.
	n.Link(h, testnet.IfConfig{Name: "nocarr", Addrs: []string{"10.81.0.1/24", "2001:db8:81::1/64"}},
		peer, testnet.IfConfig{Name: "p3", Down: true})
	// Deprecated, and a duplicate of the peer's address that fails DAD.
	h.IP(t, "addr", "add", "2001:db8:77::d/64", "dev", "dual0", "nodad", "preferred_lft", "0")
	h.IP(t, "addr", "add", "2001:db8:77::dd/64", "dev", "dual0")
	// A temporary (privacy) address made by the kernel from a mngtmpaddr one.
	h.Sysctl(t, "net.ipv6.conf.dual0.use_tempaddr", "2")
	h.IP(t, "addr", "add", "2001:db8:77::100/64", "dev", "dual0", "nodad", "mngtmpaddr", "valid_lft", "3600", "preferred_lft", "1800")
	h.IP(t, "route", "add", "default", "via", "10.77.0.2", "dev", "dual0", "metric", "100")
	h.IP(t, "route", "add", "default", "via", "10.78.0.2", "dev", "v4only", "metric", "50")
	h.IP(t, "-6", "route", "add", "default", "via", "2001:db8:79::2", "dev", "v6only")
	// Wait (bounded) until DAD has failed on the duplicate and the temporary
	// address exists, as the kernel reports it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := h.IP(t, "-j", "-6", "addr", "show", "dev", "dual0")
		if bytes.Contains(out, []byte(`"dadfailed":true`)) && bytes.Contains(out, []byte(`"temporary":true`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dadfailed or temporary address on dual0 after 10s:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return h, peer
}

func TestInterfacesMatchKernel(t *testing.T) {
	h, _ := buildHost(t)
	var list []p2pd.Interface
	var listErr error
	h.Do(t, func() { list, listErr = p2pd.Interfaces() })
	if listErr != nil {
		t.Fatal(listErr)
	}
	kernel := kernelInterfaces(t, h)
	if len(list) != len(kernel) {
		t.Fatalf("%d interfaces, kernel has %d", len(list), len(kernel))
	}
	byName := map[string]p2pd.Interface{}
	for _, ifc := range list {
		byName[ifc.Name] = ifc
	}
	for _, k := range kernel {
		ifc, ok := byName[k.Name]
		if !ok {
			t.Errorf("interface %s missing", k.Name)
			continue
		}
		if ifc.Index != k.Index || ifc.MTU != k.MTU {
			t.Errorf("%s: index %d mtu %d, kernel %d %d", k.Name, ifc.Index, ifc.MTU, k.Index, k.MTU)
		}
		if k.LinkType != "loopback" && ifc.HardwareAddr.String() != k.Address {
			t.Errorf("%s: hardware address %v, kernel %s", k.Name, ifc.HardwareAddr, k.Address)
		}
		for flag, bit := range map[string]net.Flags{"UP": net.FlagUp, "LOOPBACK": net.FlagLoopback,
			"MULTICAST": net.FlagMulticast, "BROADCAST": net.FlagBroadcast, "POINTOPOINT": net.FlagPointToPoint} {
			if slices.Contains(k.Flags, flag) != (ifc.Flags&bit != 0) {
				t.Errorf("%s: flags %v, kernel %v", k.Name, ifc.Flags, k.Flags)
			}
		}
		var got []string
		for _, a := range ifc.Addrs {
			got = append(got, a.String())
		}
		slices.Sort(got)
		if want := oracleAddrs(t, k); !slices.Equal(got, want) {
			t.Errorf("%s addresses:\n got %q\nwant %q", k.Name, got, want)
		}
	}

	// The states the topology made are really seen.
	flagsOf := func(ifname, addr string) p2pd.AddrFlags {
		for _, a := range byName[ifname].Addrs {
			if a.Addr.WithZone("") == netip.MustParseAddr(addr) {
				return a.Flags
			}
		}
		t.Fatalf("%s has no %s", ifname, addr)
		return 0
	}
	for _, c := range []struct {
		ifname, addr string
		want         p2pd.AddrFlags
		without      p2pd.AddrFlags
	}{
		{"dual0", "10.77.0.5", p2pd.AddrPermanent, p2pd.AddrTemporary}, // secondary, not temporary
		{"dual0", "2001:db8:77::1", p2pd.AddrPermanent, p2pd.AddrTentative},
		{"dual0", "2001:db8:77::d", p2pd.AddrDeprecated | p2pd.AddrNoDAD, 0},
		{"dual0", "2001:db8:77::dd", p2pd.AddrDADFailed, 0},
		{"nocarr", "2001:db8:81::1", p2pd.AddrTentative, 0},
	} {
		if f := flagsOf(c.ifname, c.addr); f&c.want != c.want || f&c.without != 0 {
			t.Errorf("%s %s flags = %v, want %v without %v", c.ifname, c.addr, f, c.want, c.without)
		}
	}
	temps := 0
	for _, a := range byName["dual0"].Addrs {
		if a.Flags&p2pd.AddrTemporary != 0 {
			temps++
		}
	}
	if temps == 0 {
		t.Error("no temporary address reported on dual0")
	}

	// Supported families, by the documented rule.
	for name, want := range map[string][]p2pd.Family{
		"lo":     {p2pd.IPv4, p2pd.IPv6},
		"dual0":  {p2pd.IPv4, p2pd.IPv6},
		"v4only": {p2pd.IPv4},
		"v6only": {p2pd.IPv6},
		"down0":  nil,
		"nocarr": {p2pd.IPv4}, // its IPv6 address is tentative
	} {
		ifc := byName[name]
		if got := ifc.Supported(); !slices.Equal(got, want) {
			t.Errorf("%s: Supported = %v, want %v", name, got, want)
		}
	}

	// Routes: the secondary joins the primary's group; each usable
	// non-link-local IPv6 address is a route holding the link-local; the
	// deprecated one is served, the tentative, failed and temporary ones are not.
	dual := byName["dual0"]
	if len(dual.Routes4) != 1 || !slices.Equal(dual.Routes4[0].NIC, []netip.Addr{mp("10.77.0.1"), mp("10.77.0.5")}) || len(dual.Routes4[0].Ext) != 0 {
		t.Errorf("dual0 Routes4 = %v", dual.Routes4)
	}
	ll := dual.LinkLocals()
	if len(ll) != 1 || ll[0].Zone() != "dual0" {
		t.Fatalf("dual0 link-locals = %v", ll)
	}
	var r6 []string
	for _, r := range dual.Routes6 {
		if len(r.NIC) != 2 || r.NIC[1] != ll[0] {
			t.Errorf("route %v does not carry the link-local %v", r, ll[0])
		}
		r6 = append(r6, r.Addr().String()+" ext="+r.ExtAddr().String())
	}
	want6 := []string{"2001:db8:77::1 ext=2001:db8:77::1", "2001:db8:77::100 ext=2001:db8:77::100", "2001:db8:77::d ext=2001:db8:77::d", "fd77::1 ext=invalid IP"}
	slices.Sort(r6)
	if !slices.Equal(r6, want6) {
		t.Errorf("dual0 Routes6 = %q, want %q", r6, want6)
	}

	// Every route's default bind address and its link-local really bind.
	h.Do(t, func() {
		for _, ifc := range list {
			for _, r := range append(slices.Clone(ifc.Routes4), ifc.Routes6...) {
				hosts := []string{""}
				if ll := r.LinkLocal(); ll.IsValid() {
					hosts = append(hosts, ll.WithZone("").String())
				}
				for _, host := range hosts {
					b, err := r.Bind(host, 0)
					if err != nil {
						t.Errorf("%v: Bind(%q): %v", r, host, err)
						continue
					}
					l, err := net.Listen("tcp", b.Bound.String())
					if err != nil {
						t.Errorf("%s: listen on %v: %v", ifc.Name, b.Bound, err)
						continue
					}
					l.Close()
				}
			}
		}
	})
}

func TestLookupAndDefault(t *testing.T) {
	h, peer := buildHost(t)
	type ipRoute struct {
		Dev    string `json:"dev"`
		Metric int    `json:"metric"`
	}
	oracleDefault := func(fam string) string {
		var rs []ipRoute
		if err := json.Unmarshal(h.IP(t, "-j", fam, "route", "show", "default"), &rs); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(rs, func(a, b ipRoute) int { return a.Metric - b.Metric })
		return rs[0].Dev
	}
	h.Do(t, func() {
		for _, c := range []struct {
			f    p2pd.Family
			want string
		}{{p2pd.IPv4, oracleDefault("-4")}, {p2pd.IPv6, oracleDefault("-6")}, {p2pd.AnyFamily, oracleDefault("-4")}} {
			ifc, err := p2pd.DefaultInterface(c.f)
			if err != nil || ifc.Name != c.want {
				t.Errorf("DefaultInterface(%v) = %v, %v; ip says %s", c.f, ifc, err, c.want)
			}
		}
		if c := oracleDefault("-4"); c != "v4only" {
			t.Errorf("lowest metric default is on %s, test expects v4only", c)
		}
		if _, err := p2pd.DefaultInterface(p2pd.Family(9)); !errors.Is(err, p2pd.ErrBadFamily) {
			t.Errorf("DefaultInterface(9): %v", err)
		}

		k := kernelInterfaces(t, h)
		for _, ki := range k {
			byName, err := p2pd.InterfaceByName(ki.Name)
			if err != nil || byName.Index != ki.Index {
				t.Errorf("InterfaceByName(%s) = %v, %v", ki.Name, byName, err)
			}
			byIndex, err := p2pd.InterfaceByIndex(ki.Index)
			if err != nil || byIndex.Name != ki.Name {
				t.Errorf("InterfaceByIndex(%d) = %v, %v", ki.Index, byIndex, err)
			}
		}
		for _, c := range []struct {
			name  string
			index int
			want  error
		}{{"nosuch0", 0, p2pd.ErrNoInterface}, {"", 999999, p2pd.ErrNoInterface}, {"", 0, p2pd.ErrInvalid}, {"", -3, p2pd.ErrInvalid}} {
			var err error
			if c.name != "" {
				_, err = p2pd.InterfaceByName(c.name)
			} else {
				_, err = p2pd.InterfaceByIndex(c.index)
			}
			var ie *p2pd.InterfaceError
			if !errors.Is(err, c.want) || !errors.As(err, &ie) {
				t.Errorf("lookup %q/%d: err = %v, want %v as *InterfaceError", c.name, c.index, err, c.want)
			}
		}
	})
	// A host with no default route says so.
	peer.Do(t, func() {
		for _, f := range []p2pd.Family{p2pd.IPv4, p2pd.IPv6, p2pd.AnyFamily} {
			if _, err := p2pd.DefaultInterface(f); !errors.Is(err, p2pd.ErrNoDefaultRoute) {
				t.Errorf("peer DefaultInterface(%v): %v, want ErrNoDefaultRoute", f, err)
			}
		}
	})
}

// TestInterfacesJSONFromKernel round-trips every real interface of a host.
func TestInterfacesJSONFromKernel(t *testing.T) {
	h, _ := buildHost(t)
	var list []p2pd.Interface
	h.Do(t, func() {
		var err error
		if list, err = p2pd.Interfaces(); err != nil {
			t.Fatal(err)
		}
	})
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	var back []p2pd.Interface
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(back)
	if !bytes.Equal(b, b2) || !strings.Contains(string(b), `"fe80::`) {
		t.Errorf("JSON round trip differs:\n%s\n%s", b, b2)
	}
}

// TestPortableFallbacks runs the code used on systems without rtnetlink and
// checks it against the Linux reader, in a namespace.
func TestPortableFallbacks(t *testing.T) {
	h, _ := buildHost(t)
	h.Do(t, func() {
		kernel, err := p2pd.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		portable, err := p2pd.InterfacesNet()
		if err != nil {
			t.Fatal(err)
		}
		if len(portable) != len(kernel) {
			t.Fatalf("%d interfaces, kernel reader has %d", len(portable), len(kernel))
		}
		for i, k := range kernel {
			p := portable[i]
			if p.Name != k.Name || p.Index != k.Index || p.MTU != k.MTU || p.Flags != k.Flags {
				t.Errorf("portable %v, kernel %v", &p, &k)
			}
			var kp, pp []string
			for _, a := range k.Addrs {
				kp = append(kp, a.Addr.String()+"/"+strconv.Itoa(a.Bits))
			}
			for _, a := range p.Addrs {
				pp = append(pp, a.Addr.String()+"/"+strconv.Itoa(a.Bits))
			}
			slices.Sort(kp)
			slices.Sort(pp)
			if !slices.Equal(kp, pp) {
				t.Errorf("%s: portable addresses %v, kernel %v", k.Name, pp, kp)
			}
		}
		for _, f := range []p2pd.Family{p2pd.IPv4, p2pd.IPv6} {
			want, err := p2pd.DefaultInterface(f)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p2pd.DefaultIndexDial(f, portable)
			if err != nil || got != want.Index {
				t.Errorf("%v: dial fallback says index %d (%v), routing table says %s (%d)", f, got, err, want.Name, want.Index)
			}
		}
	})
}
