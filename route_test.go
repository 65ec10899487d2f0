package p2pd_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/p2pd/p2pd"
)

var mp = netip.MustParseAddr

func TestScopeOf(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want p2pd.Scope
	}{
		{"127.0.0.1", p2pd.ScopeLoopback},
		{"127.9.9.9", p2pd.ScopeLoopback},
		{"::1", p2pd.ScopeLoopback},
		{"169.254.3.4", p2pd.ScopeLinkLocal},
		{"fe80::1", p2pd.ScopeLinkLocal},
		{"fe80::1%eth0", p2pd.ScopeLinkLocal},
		{"10.1.2.3", p2pd.ScopePrivate},
		{"172.16.0.1", p2pd.ScopePrivate},
		{"172.32.0.1", p2pd.ScopeGlobal},
		{"192.168.1.1", p2pd.ScopePrivate},
		{"100.64.0.1", p2pd.ScopePrivate}, // carrier-grade NAT
		{"100.128.0.1", p2pd.ScopeGlobal},
		{"fd00::1", p2pd.ScopePrivate},
		{"fc00::1", p2pd.ScopePrivate},
		{"8.8.8.8", p2pd.ScopeGlobal},
		{"2001:db8::1", p2pd.ScopeGlobal},
		{"::ffff:10.0.0.1", p2pd.ScopePrivate},
		{"0.0.0.0", p2pd.ScopeOther},
		{"::", p2pd.ScopeOther},
		{"224.0.0.1", p2pd.ScopeOther},
		{"ff02::1", p2pd.ScopeOther},
	} {
		if got := p2pd.ScopeOf(mp(tc.addr)); got != tc.want {
			t.Errorf("ScopeOf(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if got := p2pd.ScopeOf(netip.Addr{}); got != p2pd.ScopeOther {
		t.Errorf("ScopeOf(invalid) = %v", got)
	}
}

// mapResolver answers from a map; missing keys are unknown.
type mapResolver map[netip.Addr]netip.Addr

func (m mapResolver) ExtAddr(_ context.Context, _ *p2pd.Interface, nic netip.Addr) (netip.Addr, error) {
	if e, ok := m[nic]; ok {
		return e, nil
	}
	return netip.Addr{}, p2pd.ErrExtUnknown
}

type errResolver struct{ err error }

func (r errResolver) ExtAddr(context.Context, *p2pd.Interface, netip.Addr) (netip.Addr, error) {
	return netip.Addr{}, r.err
}

func addrs(list ...string) []p2pd.IfAddr {
	var out []p2pd.IfAddr
	for _, s := range list {
		p := netip.MustParsePrefix(s)
		a := p.Addr()
		if a.IsLinkLocalUnicast() && a.Is6() {
			a = a.WithZone("eth0")
		}
		out = append(out, p2pd.IfAddr{Addr: a, Bits: p.Bits()})
	}
	return out
}

func testIface() *p2pd.Interface {
	ifc := &p2pd.Interface{Name: "eth0", Index: 2, Flags: net.FlagUp | net.FlagMulticast, MTU: 1500,
		Addrs: addrs("192.168.1.5/24", "203.0.113.9/24", "10.0.0.2/8", "172.16.0.9/12", "192.0.2.77/24",
			"fe80::1/64", "2001:db8::10/64", "fd00::5/64", "2001:db8::99/64", "fe80::2/64", "2001:db8::77/64", "169.254.0.4/16")}
	ifc.Addrs[8].Flags = p2pd.AddrTentative  // 2001:db8::99 not usable yet
	ifc.Addrs[10].Flags = p2pd.AddrTemporary // 2001:db8::77 rotates: not served
	return ifc
}

func TestResolveRoutes(t *testing.T) {
	ifc := testIface()
	res := mapResolver{
		mp("192.168.1.5"): mp("198.51.100.7"),
		mp("10.0.0.2"):    mp("198.51.100.7"),
		mp("fd00::5"):     mp("2001:db8:ffff::5"),
	}
	if err := ifc.Resolve(context.Background(), res); err != nil {
		t.Fatal(err)
	}
	ll := []netip.Addr{mp("fe80::1%eth0"), mp("fe80::2%eth0")}
	want4 := p2pd.RoutePool{
		{Family: p2pd.IPv4, Interface: "eth0", NIC: []netip.Addr{mp("192.168.1.5"), mp("10.0.0.2")}, Ext: []netip.Addr{mp("198.51.100.7")}},
		{Family: p2pd.IPv4, Interface: "eth0", NIC: []netip.Addr{mp("203.0.113.9")}, Ext: []netip.Addr{mp("203.0.113.9")}},
		{Family: p2pd.IPv4, Interface: "eth0", NIC: []netip.Addr{mp("172.16.0.9"), mp("169.254.0.4")}},
		{Family: p2pd.IPv4, Interface: "eth0", NIC: []netip.Addr{mp("192.0.2.77")}, Ext: []netip.Addr{mp("192.0.2.77")}},
	}
	want6 := p2pd.RoutePool{
		{Family: p2pd.IPv6, Interface: "eth0", NIC: append([]netip.Addr{mp("2001:db8::10")}, ll...), Ext: []netip.Addr{mp("2001:db8::10")}},
		{Family: p2pd.IPv6, Interface: "eth0", NIC: append([]netip.Addr{mp("fd00::5")}, ll...), Ext: []netip.Addr{mp("2001:db8:ffff::5")}},
	}
	if !reflect.DeepEqual(ifc.Routes4, want4) {
		t.Errorf("Routes4:\n got %v\nwant %v", ifc.Routes4, want4)
	}
	if !reflect.DeepEqual(ifc.Routes6, want6) {
		t.Errorf("Routes6:\n got %v\nwant %v", ifc.Routes6, want6)
	}
	if got := ifc.Supported(); !slices.Equal(got, []p2pd.Family{p2pd.IPv4, p2pd.IPv6}) {
		t.Errorf("Supported = %v", got)
	}

	// Offline: private addresses share one route with no EXT IP; ULA has none.
	if err := ifc.Resolve(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if r := ifc.Routes4[0]; !slices.Equal(r.NIC, []netip.Addr{mp("192.168.1.5"), mp("10.0.0.2"), mp("172.16.0.9"), mp("169.254.0.4")}) || len(r.Ext) != 0 {
		t.Errorf("offline private route = %v", r)
	}
	if r := ifc.Routes6[1]; r.ExtAddr().IsValid() {
		t.Errorf("offline ULA route has EXT IP: %v", r)
	}

	// A failing resolver leaves the interface as it was.
	before := slices.Clone(ifc.Routes4)
	boom := errors.New("stun timeout")
	if err := ifc.Resolve(context.Background(), errResolver{boom}); !errors.Is(err, boom) {
		t.Fatalf("Resolve with failing resolver = %v, want %v", err, boom)
	}
	if !reflect.DeepEqual(before, ifc.Routes4) {
		t.Error("failed Resolve changed the routes")
	}
	// A resolver that answers with the wrong family is refused.
	err := ifc.Resolve(context.Background(), mapResolver{mp("192.168.1.5"): mp("2001:db8::1")})
	if !errors.Is(err, p2pd.ErrInvalid) {
		t.Errorf("wrong-family answer: err = %v, want ErrInvalid", err)
	}
}

func TestSupports(t *testing.T) {
	for _, tc := range []struct {
		name  string
		up    bool
		addrs []p2pd.IfAddr
		want  []p2pd.Family
	}{
		{"dual", true, addrs("10.0.0.1/24", "2001:db8::1/64", "fe80::1/64"), []p2pd.Family{p2pd.IPv4, p2pd.IPv6}},
		{"down", false, addrs("10.0.0.1/24", "2001:db8::1/64"), nil},
		{"v4 only", true, addrs("10.0.0.1/24"), []p2pd.Family{p2pd.IPv4}},
		{"link-local only", true, addrs("10.0.0.1/24", "fe80::1/64"), []p2pd.Family{p2pd.IPv4}},
		{"global without link-local", true, addrs("2001:db8::1/64"), []p2pd.Family{p2pd.IPv6}},
		{"ula", true, addrs("fd00::1/64", "fe80::1/64"), []p2pd.Family{p2pd.IPv6}},
		{"loopback", true, addrs("127.0.0.1/8", "::1/128"), []p2pd.Family{p2pd.IPv4, p2pd.IPv6}},
		{"nothing", true, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ifc := &p2pd.Interface{Name: "eth0", Index: 2, Addrs: tc.addrs}
			if tc.up {
				ifc.Flags = net.FlagUp
			}
			if err := ifc.Resolve(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			if got := ifc.Supported(); !slices.Equal(got, tc.want) {
				t.Errorf("Supported = %v, want %v", got, tc.want)
			}
		})
	}
	// Tentative and failed addresses do not count.
	ifc := &p2pd.Interface{Name: "eth0", Flags: net.FlagUp, Addrs: addrs("2001:db8::1/64", "10.0.0.1/24")}
	ifc.Addrs[0].Flags = p2pd.AddrDADFailed
	ifc.Addrs[1].Flags = p2pd.AddrTentative
	ifc.Resolve(context.Background(), nil)
	if got := ifc.Supported(); len(got) != 0 {
		t.Errorf("unusable addresses: Supported = %v", got)
	}
	ifc.Addrs[1].Flags = p2pd.AddrTentative | p2pd.AddrOptimistic
	ifc.Resolve(context.Background(), nil)
	if !ifc.Supports(p2pd.IPv4) {
		t.Error("optimistic address should be usable")
	}
}

func TestRouteBind(t *testing.T) {
	ifc := testIface()
	ifc.Resolve(context.Background(), nil)
	r4, r6 := ifc.Routes4[0], ifc.Routes6[0]
	for _, tc := range []struct {
		name    string
		r       p2pd.Route
		host    string
		port    uint16
		want    string
		wantErr error
	}{
		{"v4 default", r4, "", 80, "192.168.1.5:80", nil},
		{"v4 wildcard", r4, "*", 80, "0.0.0.0:80", nil},
		{"v4 localhost", r4, "localhost", 0, "127.0.0.1:0", nil},
		{"v4 second nic", r4, "10.0.0.2", 9, "10.0.0.2:9", nil},
		{"v4 mapped", r4, "::ffff:10.0.0.2", 9, "10.0.0.2:9", nil},
		{"v4 not on route", r4, "203.0.113.9", 9, "", p2pd.ErrAddrNotOnRoute},
		{"v4 ext not nic", ifc.Routes4[1], "198.51.100.7", 9, "", p2pd.ErrAddrNotOnRoute},
		{"v4 given v6", r4, "2001:db8::10", 9, "", p2pd.ErrFamilyUnsupported},
		{"v6 default is global", r6, "", 443, "[2001:db8::10]:443", nil},
		{"v6 wildcard", r6, "*", 443, "[::]:443", nil},
		{"v6 localhost", r6, "localhost", 443, "[::1]:443", nil},
		{"v6 link-local gets zone", r6, "fe80::2", 5, "[fe80::2%eth0]:5", nil},
		{"v6 link-local right zone", r6, "fe80::1%eth0", 5, "[fe80::1%eth0]:5", nil},
		{"v6 link-local wrong zone", r6, "fe80::1%eth1", 5, "", p2pd.ErrAddrNotOnRoute},
		{"v6 other route's ip", r6, "fd00::5", 5, "", p2pd.ErrAddrNotOnRoute},
		{"garbage", r6, "example.com", 5, "", p2pd.ErrInvalid},
		{"empty route", p2pd.Route{Family: p2pd.IPv4}, "", 5, "", p2pd.ErrNoAddress},
		{"no family", p2pd.Route{NIC: []netip.Addr{mp("10.0.0.1")}}, "*", 5, "", p2pd.ErrBadFamily},
		{"zoneless link-local without interface", p2pd.Route{Family: p2pd.IPv6, NIC: []netip.Addr{mp("fe80::1")}}, "fe80::1", 5, "", p2pd.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.r.Bind(tc.host, tc.port)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Bind(%q) err = %v, want %v", tc.host, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := b.Bound.String(); got != tc.want || !b.IsBound() {
				t.Errorf("Bind(%q).Bound = %s, want %s", tc.host, got, tc.want)
			}
			if tc.r.IsBound() {
				t.Error("Bind changed its receiver")
			}
			// Binding a bound route again ignores the old address.
			again, err := b.Bind("*", 7)
			if err != nil || again.Bound.Port() != 7 || !again.Bound.Addr().IsUnspecified() {
				t.Errorf("rebind = %v, %v", again.Bound, err)
			}
		})
	}
	var ae *p2pd.AddrError
	if _, err := r4.Bind("203.0.113.9", 1); !errors.As(err, &ae) || ae.Addr != mp("203.0.113.9") {
		t.Errorf("errors.As AddrError: %v", err)
	}
}

func TestRoutePool(t *testing.T) {
	var empty p2pd.RoutePool
	if _, err := empty.First(); !errors.Is(err, p2pd.ErrNoRoute) {
		t.Errorf("First of empty pool: %v", err)
	}
	ifc := testIface()
	ifc.Resolve(context.Background(), mapResolver{mp("192.168.1.5"): mp("198.51.100.7")})
	first, err := ifc.Routes4.First()
	if err != nil || first.Addr() != mp("192.168.1.5") {
		t.Errorf("First = %v, %v", first, err)
	}
	for ip, wantNIC := range map[string]string{
		"10.0.0.2":     "10.0.0.2", // grouped with the unknown ones
		"198.51.100.7": "192.168.1.5",
		"203.0.113.9":  "203.0.113.9",
	} {
		r, ok := ifc.Routes4.Locate(mp(ip))
		if !ok || !r.HasNIC(mp(wantNIC)) {
			t.Errorf("Locate(%s) = %v, %v", ip, r, ok)
		}
	}
	if _, ok := ifc.Routes4.Locate(mp("1.1.1.1")); ok {
		t.Error("Locate found an unknown address")
	}
	if r, ok := ifc.Routes6.Locate(mp("fe80::2%eth0")); !ok || r.Addr() != mp("2001:db8::10") {
		t.Errorf("Locate(link-local) = %v, %v", r, ok)
	}
	if ifc.Routes(p2pd.AnyFamily) != nil {
		t.Error("Routes(AnyFamily) should be nil")
	}
}
