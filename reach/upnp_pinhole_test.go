package reach

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
)

const urnFirewall = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"

// pinholeTestAddr is the IPv6 listener the tests open a pinhole to.
var pinholeTestAddr = netip.MustParseAddrPort("[2001:db8::10]:4000")

// fakeFirewall is the WANIPv6FirewallControl:1 of a fakeIGD, guarded by
// its mu. It acts as miniupnpd 2.3.1 does, but that secure takes any IPv6
// sender for InternalClient.
type fakeFirewall struct {
	disabled    bool // GetFirewallStatus: FirewallEnabled 0 (and AddPinhole 702)
	noInbound   bool // InboundPinholeAllowed 0 (and AddPinhole 703)
	statusFault int  // a fault code for GetFirewallStatus
	refuse      int  // a fault code for every AddPinhole
	secure      bool // 606 for a pinhole action over IPv4 (miniupnpd wants it from InternalClient, over IPv6)
	nextID      uint16
	pinholes    map[uint16]fakePinhole
}

type fakePinhole struct {
	client, port, proto, lease string
}

// newFirewallIGD is a fakeIGD with service (none: "") and a firewall
// control. Pinhole requests over IPv6 go nowhere until the test ends.
func newFirewallIGD(t *testing.T, service string) *fakeIGD {
	g := newFakeIGD(t, service)
	g.fw = &fakeFirewall{nextID: 7, pinholes: make(map[uint16]fakePinhole)}
	pinholeRoute(t, func(netip.Addr) (netip.Addr, netip.Addr, error) {
		return netip.Addr{}, netip.Addr{}, errors.New("no IPv6 in this test")
	})
	return g
}

// pinholeRoute sets upnpRoute6 until the test ends.
func pinholeRoute(t *testing.T, f func(netip.Addr) (netip.Addr, netip.Addr, error)) {
	old := upnpRoute6
	upnpRoute6 = f
	t.Cleanup(func() { upnpRoute6 = old })
}

// newSecureIGD is a fakeIGD with a WANIPConnection:2 and a secure firewall
// control, served on [::1] too, at the same port: the IPv6 default router
// of pinhole requests, sent from ::1.
func newSecureIGD(t *testing.T) *fakeIGD {
	for range 10 {
		g := newFirewallIGD(t, urnWANIP2)
		g.fw.secure = true
		ln, err := net.Listen("tcp6", net.JoinHostPort("::1", g.srv.URL[strings.LastIndex(g.srv.URL, ":")+1:]))
		if err != nil {
			continue // the port is taken on ::1
		}
		srv := &http.Server{Handler: g.srv.Config.Handler}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		lo := netip.IPv6Loopback()
		pinholeRoute(t, func(netip.Addr) (netip.Addr, netip.Addr, error) { return lo, lo, nil })
		return g
	}
	t.Skip("no port free on both 127.0.0.1 and ::1")
	return nil
}

func (g *fakeIGD) firewallHandler(w http.ResponseWriter, r *http.Request) {
	ns, action, ok := strings.Cut(strings.Trim(r.Header.Get("SOAPAction"), `"`), "#")
	args, err := soapArgs(r)
	if !ok || ns != urnFirewall || err != nil || g.fw == nil {
		soapFault(w, 401, "Invalid Action")
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	from := upnpPeer(r)
	g.calls = append(g.calls, soapCall{action: action, args: args, from: from})
	fw := g.fw
	if fw.secure && action != "GetFirewallStatus" && !from.Is6() {
		soapFault(w, 606, "Action not authorized")
		return
	}
	lease := func(s string) bool {
		n, err := strconv.Atoi(s)
		return err == nil && n >= 1 && n <= 86400
	}
	id := func() (uint16, bool) {
		n, err := strconv.ParseUint(args["UniqueID"], 10, 16)
		return uint16(n), err == nil
	}
	switch action {
	case "GetFirewallStatus":
		if fw.statusFault != 0 {
			soapFault(w, fw.statusFault, "Invalid Action")
			return
		}
		b := func(v bool) string { return map[bool]string{false: "1", true: "0"}[v] }
		soapOK(w, urnFirewall, action, "<FirewallEnabled>"+b(fw.disabled)+"</FirewallEnabled><InboundPinholeAllowed>"+b(fw.noInbound)+"</InboundPinholeAllowed>")
	case "AddPinhole":
		switch {
		case fw.disabled:
			soapFault(w, 702, "FirewallDisabled")
			return
		case fw.noInbound:
			soapFault(w, 703, "InboundPinholeNotAllowed")
			return
		case fw.refuse != 0:
			soapFault(w, fw.refuse, "Action not authorized")
			return
		}
		a, err := netip.ParseAddr(args["InternalClient"])
		switch {
		case args["InternalPort"] == "" || args["InternalPort"] == "0":
			soapFault(w, 706, "InternalPortWilcardingNotAllowed")
			return
		case err != nil || !a.Is6() || a.String() != args["InternalClient"]:
			soapFault(w, 708, "WildCardNotPermittedInSrcIP")
			return
		case args["Protocol"] != "6" && args["Protocol"] != "17":
			soapFault(w, 705, "ProtocolNotSupported")
			return
		case !lease(args["LeaseTime"]) || args["RemotePort"] == "":
			soapFault(w, 402, "Invalid Args")
			return
		}
		p := fakePinhole{args["InternalClient"], args["InternalPort"], args["Protocol"], args["LeaseTime"]}
		uid := fw.nextID
		for k, q := range fw.pinholes {
			if q.client == p.client && q.port == p.port && q.proto == p.proto {
				uid = k // the same pinhole: its lease is updated
			}
		}
		if uid == fw.nextID {
			fw.nextID++
		}
		fw.pinholes[uid] = p
		soapOK(w, urnFirewall, action, "<UniqueID>"+strconv.Itoa(int(uid))+"</UniqueID>")
	case "UpdatePinhole":
		uid, ok := id()
		if !ok || !lease(args["NewLeaseTime"]) {
			soapFault(w, 402, "Invalid Args")
			return
		}
		p, ok := fw.pinholes[uid]
		if !ok {
			soapFault(w, 704, "NoSuchEntry")
			return
		}
		p.lease = args["NewLeaseTime"]
		fw.pinholes[uid] = p
		soapOK(w, urnFirewall, action, "")
	case "DeletePinhole":
		uid, ok := id()
		if !ok {
			soapFault(w, 402, "Invalid Args")
			return
		}
		if _, ok := fw.pinholes[uid]; !ok {
			soapFault(w, 704, "NoSuchEntry")
			return
		}
		delete(fw.pinholes, uid)
		soapOK(w, urnFirewall, action, "")
	default:
		soapFault(w, 401, "Invalid Action")
	}
}

// pinhole returns the firewall's pinhole id.
func (g *fakeIGD) pinhole(id uint16) (fakePinhole, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.fw.pinholes[id]
	return p, ok
}

// restartFirewall forgets every pinhole, as a restarted router does.
func (g *fakeIGD) restartFirewall(next uint16) {
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.fw.pinholes)
	g.fw.nextID = next
}

func (g *fakeIGD) descriptions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.descs
}

// pinholeWantAdd checks an AddPinhole call's arguments.
func pinholeWantAdd(t *testing.T, c soapCall, client, port, proto, lease string) {
	t.Helper()
	want := map[string]string{
		"RemoteHost":     "",
		"RemotePort":     "0",
		"InternalClient": client,
		"InternalPort":   port,
		"Protocol":       proto,
		"LeaseTime":      lease,
	}
	if len(c.args) != len(want) {
		t.Errorf("%s arguments %v, want %v", c.action, c.args, want)
	}
	for k, v := range want {
		if got, ok := c.args[k]; !ok || got != v {
			t.Errorf("%s %s = %q (present %v), want %q", c.action, k, got, ok, v)
		}
	}
}

func pinholeWantLease(t *testing.T, l lease, proto p2pd.Proto, internal netip.AddrPort, lifetime time.Duration, id uint16) {
	t.Helper()
	if l.Protocol != "upnp" || l.Proto != proto || l.Internal != internal || l.External != internal ||
		l.Lifetime != lifetime || l.Granted.IsZero() || !l.pinhole || l.pinholeID != id {
		t.Errorf("pinhole lease = %+v, want %v %v for %v, ID %d", l, proto, internal, lifetime, id)
	}
}

// TestUPnPPinhole: a pinhole is opened, renewed, opened again after the
// router forgot it, and deleted; IPv4 mappings work on the same client.
func TestUPnPPinhole(t *testing.T) {
	g := newFirewallIGD(t, urnWANIP2)
	c, _ := newTestUPnP(t, g)
	ctx := upnpCtx(t)

	l, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 4000, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	pinholeWantLease(t, l, p2pd.TCP, pinholeTestAddr, time.Hour, 7)
	adds := g.actions("AddPinhole")
	if len(adds) != 1 {
		t.Fatalf("AddPinhole calls: %v", adds)
	}
	pinholeWantAdd(t, adds[0], "2001:db8::10", "4000", "6", "3600")

	// The zone goes; the lease is at most a day.
	udp := netip.MustParseAddrPort("[2001:db8::10%eth0]:4001")
	u, err := c.Map(ctx, p2pd.UDP, udp, 0, 48*time.Hour, nil)
	if err != nil {
		t.Fatalf("Map UDP: %v", err)
	}
	pinholeWantLease(t, u, p2pd.UDP, netip.MustParseAddrPort("[2001:db8::10]:4001"), 24*time.Hour, 8)
	pinholeWantAdd(t, g.actions("AddPinhole")[1], "2001:db8::10", "4001", "17", "86400")

	// A renewal updates the pinhole.
	r, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 4000, 30*time.Minute, &l)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	pinholeWantLease(t, r, p2pd.TCP, pinholeTestAddr, 30*time.Minute, 7)
	ups := g.actions("UpdatePinhole")
	if len(ups) != 1 || ups[0].args["UniqueID"] != "7" || ups[0].args["NewLeaseTime"] != "1800" {
		t.Fatalf("UpdatePinhole calls: %v", ups)
	}
	if p, _ := g.pinhole(7); p.lease != "1800" {
		t.Errorf("pinhole 7 after the renewal: %+v", p)
	}
	if n := len(g.actions("AddPinhole")); n != 2 {
		t.Errorf("AddPinhole calls after the renewal = %d, want 2", n)
	}

	// The router restarted and forgot: the renewal opens it again.
	g.restartFirewall(100)
	r2, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 4000, time.Hour, &r)
	if err != nil {
		t.Fatalf("renew after the restart: %v", err)
	}
	pinholeWantLease(t, r2, p2pd.TCP, pinholeTestAddr, time.Hour, 100)
	if ups := g.actions("UpdatePinhole"); len(ups) != 2 || ups[1].args["UniqueID"] != "7" {
		t.Errorf("UpdatePinhole calls: %v", ups)
	}
	adds = g.actions("AddPinhole")
	if len(adds) != 3 {
		t.Fatalf("AddPinhole calls: %v", adds)
	}
	pinholeWantAdd(t, adds[2], "2001:db8::10", "4000", "6", "3600")
	if p, ok := g.pinhole(100); !ok || p.port != "4000" {
		t.Errorf("pinhole 100 after the restart: %+v, %v", p, ok)
	}

	// A lease for another address is no renewal of it.
	other := netip.MustParseAddrPort("[2001:db8::11]:4000")
	o, err := c.Map(ctx, p2pd.TCP, other, 4000, time.Hour, &r2)
	if err != nil {
		t.Fatalf("Map another address: %v", err)
	}
	pinholeWantLease(t, o, p2pd.TCP, other, time.Hour, 101)
	if n := len(g.actions("UpdatePinhole")); n != 2 {
		t.Errorf("UpdatePinhole calls = %d, want 2", n)
	}

	// IPv4 on the same client.
	v4, err := c.Map(ctx, p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map IPv4: %v", err)
	}
	if v4.External.String() != upnpTestExt+":4000" || v4.pinhole || g.mapping("TCP 4000") != "127.0.0.1:4000" {
		t.Errorf("Map IPv4 = %+v", v4)
	}
	// IPv4 in IPv6 is IPv4.
	m4, err := c.Map(ctx, p2pd.UDP, netip.MustParseAddrPort("[::ffff:127.0.0.1]:4002"), 0, time.Hour, nil)
	if err != nil || m4.pinhole || g.mapping("UDP 4002") != "127.0.0.1:4002" {
		t.Errorf("Map IPv4-mapped = %+v, %v", m4, err)
	}

	// The firewall's status was asked once.
	if n := len(g.actions("GetFirewallStatus")); n != 1 {
		t.Errorf("GetFirewallStatus calls = %d, want 1", n)
	}

	if err := c.Unmap(ctx, r2); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	dels := g.actions("DeletePinhole")
	if len(dels) != 1 || dels[0].args["UniqueID"] != "100" {
		t.Errorf("DeletePinhole calls: %v", dels)
	}
	if _, ok := g.pinhole(100); ok {
		t.Error("pinhole 100 still there after Unmap")
	}
	// One already gone is no error.
	if err := c.Unmap(ctx, r2); err != nil {
		t.Errorf("second Unmap: %v", err)
	}
	if err := c.Unmap(ctx, v4); err != nil {
		t.Errorf("Unmap IPv4: %v", err)
	}
	if n := len(g.actions("DeletePortMapping")); n != 1 {
		t.Errorf("DeletePortMapping calls = %d, want 1", n)
	}
}

// TestUPnPPinholeIDReused: a restarted router numbers its pinholes from
// the start again. A lease whose ID it gave another pinhole since is
// opened again, not renewed (which would renew the other), and its Unmap
// deletes nothing.
func TestUPnPPinholeIDReused(t *testing.T) {
	g := newFirewallIGD(t, urnWANIP2)
	c, _ := newTestUPnP(t, g)
	ctx := upnpCtx(t)
	addrB := netip.MustParseAddrPort("[2001:db8::10]:4001")
	a, err := c.Map(ctx, p2pd.UDP, pinholeTestAddr, 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map A: %v", err)
	}
	b, err := c.Map(ctx, p2pd.UDP, addrB, 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map B: %v", err)
	}
	g.restartFirewall(7)
	// B renews first: its ID (8) is unknown, and it gets 7, A's.
	b2, err := c.Map(ctx, p2pd.UDP, addrB, 0, time.Hour, &b)
	if err != nil {
		t.Fatalf("renew B: %v", err)
	}
	pinholeWantLease(t, b2, p2pd.UDP, addrB, time.Hour, 7)
	a2, err := c.Map(ctx, p2pd.UDP, pinholeTestAddr, 0, time.Hour, &a)
	if err != nil {
		t.Fatalf("renew A: %v", err)
	}
	pinholeWantLease(t, a2, p2pd.UDP, pinholeTestAddr, time.Hour, 8)
	if ups := g.actions("UpdatePinhole"); len(ups) != 1 || ups[0].args["UniqueID"] != "8" {
		t.Errorf("UpdatePinhole calls: %v, want B's only", ups)
	}
	pa, okA := g.pinhole(8)
	pb, okB := g.pinhole(7)
	if !okA || pa.port != "4000" || !okB || pb.port != "4001" {
		t.Errorf("pinholes after the renewals: 8 %+v %v, 7 %+v %v", pa, okA, pb, okB)
	}
	// A's old lease (ID 7, now B's) deletes nothing.
	if err := c.Unmap(ctx, a); err != nil {
		t.Errorf("Unmap of A's old lease: %v", err)
	}
	if n := len(g.actions("DeletePinhole")); n != 0 {
		t.Errorf("DeletePinhole calls = %d for a lease whose ID is another's", n)
	}
	for _, l := range []lease{a2, b2} {
		if err := c.Unmap(ctx, l); err != nil {
			t.Errorf("Unmap %v: %v", l.Internal, err)
		}
	}
	g.mu.Lock()
	left := len(g.fw.pinholes)
	g.mu.Unlock()
	if left != 0 {
		t.Errorf("%d pinholes left", left)
	}
}

// TestUPnPPinholeFirewallClosed: a firewall that is off, or allows no
// inbound pinhole, is a refusal with its reason, told by GetFirewallStatus
// once; IPv4 still maps.
func TestUPnPPinholeFirewallClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*fakeFirewall)
		text string
	}{
		{"disabled", func(f *fakeFirewall) { f.disabled = true }, "firewall is off"},
		{"no inbound", func(f *fakeFirewall) { f.noInbound = true }, "allows no inbound pinhole"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFirewallIGD(t, urnWANIP2)
			tc.set(g.fw)
			c, _ := newTestUPnP(t, g)
			ctx := upnpCtx(t)
			for range 2 {
				_, err := c.Map(ctx, p2pd.UDP, pinholeTestAddr, 0, time.Hour, nil)
				var me *MapError
				if !errors.Is(err, ErrRefused) || errors.Is(err, ErrNoGateway) || !errors.As(err, &me) || me.Protocol != "upnp" {
					t.Fatalf("Map: %v, want a upnp *MapError wrapping ErrRefused", err)
				}
				if !strings.Contains(err.Error(), tc.text) {
					t.Errorf("error text %q lacks %q", err, tc.text)
				}
				upnpCheckText(t, err)
			}
			if n := len(g.actions("GetFirewallStatus")); n != 1 {
				t.Errorf("GetFirewallStatus calls = %d, want 1", n)
			}
			if n := len(g.actions("AddPinhole")); n != 0 {
				t.Errorf("AddPinhole calls = %d, want 0", n)
			}
			if _, err := c.Map(ctx, p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil); err != nil {
				t.Errorf("Map IPv4: %v", err)
			}
		})
	}
}

// TestUPnPPinholeStatusFault: a gateway without GetFirewallStatus is
// asked for the pinhole all the same.
func TestUPnPPinholeStatusFault(t *testing.T) {
	g := newFirewallIGD(t, urnWANIP2)
	g.fw.statusFault = 401
	c, _ := newTestUPnP(t, g)
	ctx := upnpCtx(t)
	for range 2 {
		if _, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 0, time.Hour, nil); err != nil {
			t.Fatalf("Map: %v", err)
		}
	}
	if n := len(g.actions("GetFirewallStatus")); n != 1 {
		t.Errorf("GetFirewallStatus calls = %d, want 1", n)
	}
}

// TestUPnPPinholeFault: AddPinhole's fault is a refusal with its code.
func TestUPnPPinholeFault(t *testing.T) {
	g := newFirewallIGD(t, urnWANIP2)
	g.fw.refuse = 701
	c, _ := newTestUPnP(t, g)
	_, err := c.Map(upnpCtx(t), p2pd.TCP, pinholeTestAddr, 0, time.Hour, nil)
	var me *MapError
	if !errors.As(err, &me) || me.Code != 701 || me.Protocol != "upnp" || !errors.Is(err, ErrRefused) || errors.Is(err, ErrNoGateway) {
		t.Fatalf("Map refused: %v, want a upnp *MapError, code 701, wrapping ErrRefused", err)
	}
	if !strings.Contains(err.Error(), "Action not authorized") {
		t.Errorf("error text %q lacks the gateway's description", err)
	}
	upnpCheckText(t, err)
	if n := len(g.actions("AddPinhole")); n != 1 {
		t.Errorf("AddPinhole calls = %d, want 1", n)
	}
}

// TestUPnPPinholeOverIPv6: an IGD that acts on pinholes only for requests
// over IPv6 (miniupnpd: from InternalClient itself) gets each again over
// IPv6, from the pinhole's address, at the IPv6 default router.
func TestUPnPPinholeOverIPv6(t *testing.T) {
	g := newSecureIGD(t)
	c, _ := newTestUPnP(t, g)
	ctx := upnpCtx(t)
	l, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	pinholeWantLease(t, l, p2pd.TCP, pinholeTestAddr, time.Hour, 7)
	r, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 0, time.Hour, &l)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	pinholeWantLease(t, r, p2pd.TCP, pinholeTestAddr, time.Hour, 7)
	if err := c.Unmap(ctx, r); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	if _, ok := g.pinhole(7); ok {
		t.Error("pinhole 7 still there after Unmap")
	}
	lo := netip.IPv6Loopback()
	for _, action := range []string{"AddPinhole", "UpdatePinhole", "DeletePinhole"} {
		calls := g.actions(action)
		if len(calls) != 2 || calls[0].from != upnpTestLocal || calls[1].from != lo {
			t.Errorf("%s calls: %v, want one over IPv4, then one over IPv6", action, calls)
			continue
		}
		if calls[1].args["UniqueID"] != calls[0].args["UniqueID"] || calls[1].args["InternalClient"] != calls[0].args["InternalClient"] {
			t.Errorf("%s over IPv6: %v, want what was asked over IPv4: %v", action, calls[1].args, calls[0].args)
		}
	}
	pinholeWantAdd(t, g.actions("AddPinhole")[1], "2001:db8::10", "4000", "6", "3600")
	// The firewall's status is asked over IPv4.
	if calls := g.actions("GetFirewallStatus"); len(calls) != 1 || calls[0].from != upnpTestLocal {
		t.Errorf("GetFirewallStatus calls: %v", calls)
	}
	// IPv4 mappings stay on IPv4.
	if _, err := c.Map(ctx, p2pd.UDP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil); err != nil {
		t.Errorf("Map IPv4: %v", err)
	}
}

// TestUPnPPinholeNoIPv6: without an IPv6 way to the IGD, its 606 is the
// error, with why IPv6 failed.
func TestUPnPPinholeNoIPv6(t *testing.T) {
	g := newFirewallIGD(t, urnWANIP2)
	g.fw.secure = true
	c, _ := newTestUPnP(t, g)
	ctx := upnpCtx(t)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	for _, tc := range []struct {
		route func(netip.Addr) (netip.Addr, netip.Addr, error)
		text  string
	}{
		{func(netip.Addr) (netip.Addr, netip.Addr, error) {
			return netip.Addr{}, netip.Addr{}, errors.New("no IPv6 default router")
		}, "no IPv6 default router"},
		// A source address this host does not have.
		{func(in netip.Addr) (netip.Addr, netip.Addr, error) { return in, closed.Addr(), nil }, "gateway does not answer"},
	} {
		pinholeRoute(t, tc.route)
		_, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 0, time.Hour, nil)
		var me *MapError
		if !errors.As(err, &me) || me.Code != 606 || !errors.Is(err, ErrRefused) || errors.Is(err, ErrNoGateway) {
			t.Fatalf("Map: %v, want a upnp *MapError, code 606, wrapping ErrRefused", err)
		}
		want := "Action not authorized (over IPv4; over IPv6 from 2001:db8::10: " + tc.text
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error text %q lacks %q", err, want)
		}
		upnpCheckText(t, err)
	}
}

// TestUPnPPinholeNoService: an IGD without a firewall control, or with one
// on another host, gives no pinhole, and is not searched for again for it.
func TestUPnPPinholeNoService(t *testing.T) {
	foreign := newFirewallIGD(t, urnWANIP2)
	foreign.fwControl = "http://127.0.0.2:1/fw"
	for _, g := range []*fakeIGD{newFakeIGD(t, urnWANIP2), foreign} {
		c, _ := newTestUPnP(t, g)
		ctx := upnpCtx(t)
		descs := g.descriptions()
		_, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 0, time.Hour, nil)
		var me *MapError
		if !errors.Is(err, ErrNoGateway) || !errors.As(err, &me) || me.Protocol != "upnp" {
			t.Fatalf("Map: %v, want a upnp *MapError wrapping ErrNoGateway", err)
		}
		if !strings.Contains(err.Error(), "IPv6 firewall control") {
			t.Errorf("error text %q does not say what the gateway lacks", err)
		}
		upnpCheckText(t, err)
		if n := g.descriptions(); n != descs {
			t.Errorf("the description was read %d more times: searched again", n-descs)
		}
		if err := c.Unmap(ctx, lease{Protocol: "upnp", Proto: p2pd.TCP, Internal: pinholeTestAddr, External: pinholeTestAddr, pinhole: true}); !errors.Is(err, ErrNoGateway) {
			t.Errorf("Unmap: %v, want ErrNoGateway", err)
		}
		if _, err := c.Map(ctx, p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil); err != nil {
			t.Errorf("Map IPv4: %v", err)
		}
	}
	if n := len(foreign.actions("AddPinhole")) + len(foreign.actions("GetFirewallStatus")); n != 0 {
		t.Errorf("the foreign firewall control's IGD got %d calls", n)
	}
}

// TestUPnPPinholeOnly: an IGD with a firewall control but no usable WAN
// connection (none, or one without a public IPv4 address) opens pinholes;
// IPv4 maps fail with the reason.
func TestUPnPPinholeOnly(t *testing.T) {
	noWAN := newFirewallIGD(t, "")
	noExt := newFirewallIGD(t, urnWANIP2)
	noExt.noExt = true
	for _, tc := range []struct {
		g    *fakeIGD
		want error
	}{
		{noWAN, ErrNoGateway},
		{noExt, p2pd.ErrExtUnknown},
	} {
		c, _ := newTestUPnP(t, tc.g)
		ctx := upnpCtx(t)
		l, err := c.Map(ctx, p2pd.TCP, pinholeTestAddr, 0, time.Hour, nil)
		if err != nil {
			t.Fatalf("Map: %v", err)
		}
		pinholeWantLease(t, l, p2pd.TCP, pinholeTestAddr, time.Hour, 7)
		_, err = c.Map(ctx, p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil)
		var me *MapError
		if !errors.Is(err, tc.want) || !errors.As(err, &me) {
			t.Errorf("Map IPv4: %v, want %v", err, tc.want)
		}
		upnpCheckText(t, err)
		if err := c.Unmap(ctx, l); err != nil {
			t.Errorf("Unmap: %v", err)
		}
	}
	// Without a firewall control, such an IGD is none.
	g := newFakeIGD(t, urnWANIP2)
	g.noExt = true
	newSSDPResponder(t, ssdpReply(g.loc()))
	if _, err := newUPnP(upnpCtx(t), upnpTestLocal, upnpTestTimeout); !errors.Is(err, p2pd.ErrExtUnknown) {
		t.Errorf("newUPnP without an external address: %v", err)
	}
}

func TestUPnPPinholeBadArgs(t *testing.T) {
	g := newFirewallIGD(t, urnWANIP2)
	c, _ := newTestUPnP(t, g)
	ctx := upnpCtx(t)
	for _, tc := range []struct {
		proto    p2pd.Proto
		internal string
		lifetime time.Duration
		want     error
	}{
		{p2pd.TCP, "[fe80::1]:4000", time.Hour, p2pd.ErrInvalid},
		{p2pd.TCP, "[fe80::1%eth0]:4000", time.Hour, p2pd.ErrInvalid},
		{p2pd.TCP, "[::1]:4000", time.Hour, p2pd.ErrInvalid},
		{p2pd.TCP, "[::]:4000", time.Hour, p2pd.ErrInvalid},
		{p2pd.UDP, "[ff02::1]:4000", time.Hour, p2pd.ErrInvalid},
		{p2pd.UDP, "[fd00::1]:4000", time.Hour, p2pd.ErrInvalid},
		{p2pd.TCP, "[2001:db8::10]:0", time.Hour, p2pd.ErrBadPort},
		{p2pd.Proto(9), "[2001:db8::10]:4000", time.Hour, p2pd.ErrInvalid},
		{p2pd.TCP, "[2001:db8::10]:4000", 0, p2pd.ErrInvalid},
	} {
		_, err := c.Map(ctx, tc.proto, netip.MustParseAddrPort(tc.internal), 0, tc.lifetime, nil)
		var me *MapError
		if !errors.Is(err, tc.want) || !errors.As(err, &me) || me.Protocol != "upnp" {
			t.Errorf("Map(%v, %s, %v): %v, want %v", tc.proto, tc.internal, tc.lifetime, err, tc.want)
			continue
		}
		upnpCheckText(t, err)
	}
	// An IPv6 lease that is no pinhole is none of ours.
	if err := c.Unmap(ctx, lease{Protocol: "upnp", Proto: p2pd.TCP, External: pinholeTestAddr}); !errors.Is(err, p2pd.ErrInvalid) {
		t.Errorf("Unmap of an IPv6 lease that is no pinhole: %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := len(g.calls); n != 1 || g.calls[0].action != "GetExternalIPAddress" {
		t.Errorf("the IGD got %v for bad arguments", g.calls)
	}
}

// TestUPnPPinholeRediscover: the router restarted on another HTTP port and
// forgot its pinholes; the renewal finds it again, asks its firewall's
// status anew, and opens the pinhole again.
func TestUPnPPinholeRediscover(t *testing.T) {
	g1 := newFirewallIGD(t, urnWANIP2)
	c, r := newTestUPnP(t, g1)
	ctx := upnpCtx(t)
	l, err := c.Map(ctx, p2pd.UDP, pinholeTestAddr, 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	g1.srv.Close()
	g2 := newFirewallIGD(t, urnWANIP2)
	g2.fw.nextID = 50
	r.setReplies(ssdpReply(g2.loc()))
	c.timeout = time.Hour // the search stops at the known host's answer
	n, err := c.Map(ctx, p2pd.UDP, pinholeTestAddr, 0, time.Hour, &l)
	if err != nil {
		t.Fatalf("renew after the restart: %v", err)
	}
	pinholeWantLease(t, n, p2pd.UDP, pinholeTestAddr, time.Hour, 50)
	if st, up, add := g2.actions("GetFirewallStatus"), g2.actions("UpdatePinhole"), g2.actions("AddPinhole"); len(st) != 1 || len(up) != 1 || len(add) != 1 {
		t.Errorf("the restarted router got GetFirewallStatus %v, UpdatePinhole %v, AddPinhole %v", st, up, add)
	}
}
