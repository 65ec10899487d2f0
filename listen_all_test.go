package p2pd_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/p2pd/p2pd"
)

// dmIface builds an up interface from CIDRs, with its route pools, without
// touching the OS. Link-local IPv6 addresses get the interface as zone.
func dmIface(t *testing.T, name string, cidrs ...string) *p2pd.Interface {
	t.Helper()
	ifc := &p2pd.Interface{Name: name, Index: 7, Flags: net.FlagUp, MTU: 1500}
	for _, c := range cidrs {
		p := netip.MustParsePrefix(c)
		a := p.Addr()
		if a.Is6() && a.IsLinkLocalUnicast() {
			a = a.WithZone(name)
		}
		ifc.Addrs = append(ifc.Addrs, p2pd.IfAddr{Addr: a, Bits: p.Bits()})
	}
	if err := ifc.Resolve(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	return ifc
}

// dmPlanAddrs returns the distinct bound addresses of a plan, in order.
func dmPlanAddrs(specs []p2pd.Specific) []string {
	var out []string
	for _, s := range specs {
		a := s.Route.Bound.Addr().String()
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

var (
	dmDual = func(t *testing.T) *p2pd.Interface {
		return dmIface(t, "eth1", "10.77.0.1/24", "2001:db8:77::1/64", "fe80::1/64")
	}
	dmV4 = func(t *testing.T) *p2pd.Interface { return dmIface(t, "eth4", "10.44.0.1/24") }
	dmV6 = func(t *testing.T) *p2pd.Interface {
		return dmIface(t, "eth6", "2001:db8:66::1/64", "fd00:66::1/64", "fe80::6/64")
	}
	dmTunnel = func(t *testing.T) *p2pd.Interface { return dmIface(t, "tun0", "2001:db8:99::1/64") } // no link-local
)

// The seed's example: an interface and a route of another interface, both
// dual-stack, ports [10000, 30000-30100], TCP, any family.
func TestPlanAllSeedCount(t *testing.T) {
	i, other := dmDual(t), dmIface(t, "eth2", "10.78.0.1/24", "2001:db8:78::1/64", "fe80::2/64")
	r := other.Routes6[0]
	r, err := r.Bind("", 5555) // bound: ignored
	if err != nil {
		t.Fatal(err)
	}
	ports := p2pd.Ports{p2pd.Port(10000), p2pd.Range(30000, 30100)}
	var d p2pd.Daemon
	specs, err := d.PlanAll([]p2pd.Target{i, r}, ports, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily)
	if err != nil {
		t.Fatal(err)
	}
	// ports × protos × Σ(IPv4 binds + 2 × IPv6 binds) = 102 × 1 × ((1+2) + (0+2))
	if want := 102 * 1 * ((1 + 2*1) + (0 + 2*1)); len(specs) != want || want != 510 {
		t.Fatalf("PlanAll made %d listeners, want %d", len(specs), want)
	}
	want := []string{"10.77.0.1", "2001:db8:77::1", "fe80::1%eth1", "2001:db8:78::1", "fe80::2%eth2"}
	if got := dmPlanAddrs(specs); !slices.Equal(got, want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
	for _, s := range specs {
		if s.Proto != p2pd.TCP || s.Route.Bound.Port() == 5555 {
			t.Fatalf("bad spec %v", s)
		}
	}
	// Two dual-stack interfaces: 2 × 102 × 1 × (1 + 2) = 612.
	specs, err = d.PlanAll([]p2pd.Target{i, other}, ports, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily)
	if err != nil || len(specs) != 612 {
		t.Fatalf("two interfaces: %d, %v; want 612", len(specs), err)
	}
}

func TestPlanAllTargetKinds(t *testing.T) {
	dual := dmDual(t)
	two6 := dmIface(t, "eth3", "10.33.0.1/24", "10.33.0.2/24", "2001:db8:33::1/64", "fd00:33::1/64", "fe80::3/64")
	one := p2pd.Ports{p2pd.Port(9)}
	tests := []struct {
		name    string
		targets []p2pd.Target
		af      p2pd.Family
		want    []string
	}{
		{"interface", []p2pd.Target{dual}, p2pd.AnyFamily, []string{"10.77.0.1", "2001:db8:77::1", "fe80::1%eth1"}},
		{"interface first route only", []p2pd.Target{two6}, p2pd.AnyFamily, []string{"10.33.0.1", "2001:db8:33::1", "fe80::3%eth3"}},
		{"route v4", []p2pd.Target{dual.Routes4[0]}, p2pd.AnyFamily, []string{"10.77.0.1"}},
		{"route v6", []p2pd.Target{dual.Routes6[0]}, p2pd.AnyFamily, []string{"2001:db8:77::1", "fe80::1%eth1"}},
		{"route of other family skipped", []p2pd.Target{dual.Routes6[0], dual.Routes4[0]}, p2pd.IPv4, []string{"10.77.0.1"}},
		// Two IPv6 routes share the link-local: it is bound once.
		{"pool v6 shares link-local", []p2pd.Target{two6.Routes6}, p2pd.AnyFamily, []string{"2001:db8:33::1", "fe80::3%eth3", "fd00:33::1"}},
		{"pool v4", []p2pd.Target{two6.Routes4}, p2pd.AnyFamily, []string{"10.33.0.1"}},
		// Duplicates across targets collapse.
		{"interface and its own route", []p2pd.Target{dual, dual.Routes6[0], dual.Routes4}, p2pd.AnyFamily, []string{"10.77.0.1", "2001:db8:77::1", "fe80::1%eth1"}},
		{"tunnel without link-local", []p2pd.Target{dmTunnel(t)}, p2pd.AnyFamily, []string{"2001:db8:99::1"}},
		// A ULA address is bound without a zone (P2PD adds one and fails).
		{"ULA", []p2pd.Target{two6.Routes6[1]}, p2pd.IPv6, []string{"fd00:33::1", "fe80::3%eth3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d p2pd.Daemon
			specs, err := d.PlanAll(tt.targets, one, []p2pd.Proto{p2pd.UDP}, tt.af)
			if err != nil {
				t.Fatal(err)
			}
			if got := dmPlanAddrs(specs); !slices.Equal(got, tt.want) {
				t.Fatalf("addresses %v, want %v", got, tt.want)
			}
			if len(specs) != len(tt.want) {
				t.Fatalf("%d listeners for %d addresses", len(specs), len(tt.want))
			}
			for _, s := range specs {
				if p2pd.FamilyOf(s.Route.Bound.Addr()) != s.Route.Family {
					t.Errorf("%v: family %v", s, s.Route.Family)
				}
			}
		})
	}
}

func TestPlanAllFamilies(t *testing.T) {
	v4, v6, dual := dmV4(t), dmV6(t), dmDual(t)
	tests := []struct {
		name      string
		targets   []p2pd.Target
		af        p2pd.Family
		errorOnAF bool
		n         int   // listeners (1 port, 1 proto)
		err       error // wanted error, nil for none
	}{
		{"any", []p2pd.Target{v4, dual}, p2pd.AnyFamily, false, 1 + 3, nil},
		{"any error_on_af", []p2pd.Target{v4, dual}, p2pd.AnyFamily, true, 1 + 3, nil},
		{"v4", []p2pd.Target{v4, dual, v6}, p2pd.IPv4, false, 1 + 1, nil},
		{"v4 error_on_af", []p2pd.Target{v4, dual, v6}, p2pd.IPv4, true, 0, p2pd.ErrFamilyUnsupported},
		{"v6", []p2pd.Target{v4, dual, v6}, p2pd.IPv6, false, 2 + 2, nil},
		{"v6 error_on_af", []p2pd.Target{v4, dual, v6}, p2pd.IPv6, true, 0, p2pd.ErrFamilyUnsupported},
		{"v6 only v4 target", []p2pd.Target{v4}, p2pd.IPv6, false, 0, p2pd.ErrFamilyUnsupported},
		{"v6 route any error_on_af", []p2pd.Target{v6.Routes6[0]}, p2pd.AnyFamily, true, 2, nil},
		{"v4 route asked v6 error_on_af", []p2pd.Target{v4.Routes4[0]}, p2pd.IPv6, true, 0, p2pd.ErrFamilyUnsupported},
		{"down interface any error_on_af", []p2pd.Target{&p2pd.Interface{Name: "x"}}, p2pd.AnyFamily, true, 0, p2pd.ErrFamilyUnsupported},
		{"bad family", []p2pd.Target{dual}, p2pd.Family(5), false, 0, p2pd.ErrBadFamily},
		{"bad route family", []p2pd.Target{p2pd.Route{NIC: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}, p2pd.AnyFamily, false, 0, p2pd.ErrBadFamily},
		{"nil interface", []p2pd.Target{(*p2pd.Interface)(nil)}, p2pd.AnyFamily, false, 0, p2pd.ErrInvalid},
		{"nil target", []p2pd.Target{nil}, p2pd.AnyFamily, false, 0, p2pd.ErrInvalid},
		{"no targets", nil, p2pd.AnyFamily, false, 0, p2pd.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p2pd.Daemon{ErrorOnAF: tt.errorOnAF}
			specs, err := d.PlanAll(tt.targets, p2pd.Ports{p2pd.Port(7)}, []p2pd.Proto{p2pd.TCP}, tt.af)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.HasPrefix(err.Error(), "p2pd: ") {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil || len(specs) != tt.n {
				t.Fatalf("PlanAll = %d listeners, %v; want %d", len(specs), err, tt.n)
			}
		})
	}
}

func TestPlanAllArguments(t *testing.T) {
	dual := dmDual(t)
	var d p2pd.Daemon
	tg := []p2pd.Target{dual}
	if _, err := d.PlanAll(tg, nil, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily); !errors.Is(err, p2pd.ErrBadPort) {
		t.Errorf("no ports: %v", err)
	}
	if _, err := d.PlanAll(tg, p2pd.Ports{{20, 10}}, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily); !errors.Is(err, p2pd.ErrBadPort) {
		t.Errorf("reversed range: %v", err)
	}
	if _, err := d.PlanAll(tg, p2pd.Ports{p2pd.Port(1)}, nil, p2pd.AnyFamily); !errors.Is(err, p2pd.ErrInvalid) {
		t.Errorf("no protos: %v", err)
	}
	if _, err := d.PlanAll(tg, p2pd.Ports{p2pd.Port(1)}, []p2pd.Proto{9}, p2pd.AnyFamily); !errors.Is(err, p2pd.ErrInvalid) {
		t.Errorf("bad proto: %v", err)
	}
	specs, err := d.PlanAll(tg, p2pd.Ports{p2pd.Port(1), {3, 4}}, []p2pd.Proto{p2pd.TCP, p2pd.UDP, p2pd.TCP}, p2pd.AnyFamily)
	if err != nil || len(specs) != 3*2*3 {
		t.Fatalf("duplicate proto: %d, %v; want 18", len(specs), err)
	}
}

// The guard refuses before anything is bound and says how many listeners
// the call would open.
func TestPlanAllGuard(t *testing.T) {
	dual := dmDual(t)
	ports := p2pd.Ports{{1, 65535}}
	d := p2pd.Daemon{}
	_, err := d.PlanAll([]p2pd.Target{dual}, ports, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
	var le *p2pd.LimitError
	if !errors.As(err, &le) || !errors.Is(err, p2pd.ErrTooManyListeners) {
		t.Fatalf("err = %v, want a *LimitError", err)
	}
	if le.Want != 65535*2*3 || le.Limit != p2pd.DefaultMaxListeners || !strings.Contains(err.Error(), "393210") {
		t.Fatalf("LimitError %+v: %v", le, err)
	}
	// The same through ListenAll: refused before binding (port 1 would need
	// root and could not be bound by a plain user anyway).
	if _, err := d.ListenAll(context.Background(), []p2pd.Target{dual}, ports, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily); !errors.Is(err, p2pd.ErrTooManyListeners) {
		t.Fatalf("ListenAll: %v", err)
	}
	d.MaxListeners = 5
	if _, err := d.PlanAll([]p2pd.Target{dual}, p2pd.Ports{{1, 2}}, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily); !errors.As(err, &le) || le.Want != 6 || le.Limit != 5 {
		t.Fatalf("MaxListeners 5: %v", err)
	}
	d.MaxListeners = 6
	if _, err := d.PlanAll([]p2pd.Target{dual}, p2pd.Ports{{1, 2}}, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily); err != nil {
		t.Fatalf("MaxListeners 6: %v", err)
	}
	d.MaxListeners = -1
	if specs, err := d.PlanAll([]p2pd.Target{dual}, p2pd.Ports{{1, 1000}}, []p2pd.Proto{p2pd.TCP}, p2pd.AnyFamily); err != nil || len(specs) != 3000 {
		t.Fatalf("no limit: %d, %v", len(specs), err)
	}
}
