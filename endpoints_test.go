package p2pd

import (
	"context"
	"net/netip"
	"testing"
)

// TestEndpointsLoopback checks the rules of Endpoints on listeners that can
// be opened anywhere (loopback, wildcard); stun_linux_test.go checks private
// and public addresses behind a real NAT.
func TestEndpointsLoopback(t *testing.T) {
	d := &Daemon{PipeConfig: PipeConfig{Logger: quietLogger()}, WatchInterval: -1}
	defer d.Close()
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	ext := netip.MustParseAddr("203.0.113.7")
	natted := Route{Family: IPv4, Interface: "lo", NIC: []netip.Addr{lo}, Ext: []netip.Addr{ext}}
	public := Route{Family: IPv4, Interface: "lo", NIC: []netip.Addr{lo, ext}, Ext: []netip.Addr{ext}}

	bind := func(r Route, host string) Route {
		b, err := r.Bind(host, 0)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name  string
		route Route
		proto Proto
		extIP netip.Addr
		ext   bool // port known
	}{
		{"loopback: never an external address", bind(natted, ""), TCP, netip.Addr{}, false},
		{"wildcard behind a NAT: EXT IP, port unknown", bind(natted, "*"), UDP, ext, false},
		{"wildcard, EXT IP is a NIC IP: port known", bind(public, "*"), TCP, ext, true},
		{"wildcard, no EXT IP", bind(Route{Family: IPv4, NIC: []netip.Addr{lo}}, "*"), TCP, netip.Addr{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := d.AddListener(ctx, c.proto, c.route)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			var e Endpoint
			n := 0
			for _, x := range d.Endpoints() {
				if x.Pipe == p {
					e, n = x, n+1
				}
			}
			if n != 1 {
				t.Fatalf("listener listed %d times in %v", n, d.Endpoints())
			}
			t.Log(e)
			if e.Local != p.LocalAddr() || e.Proto != c.proto || e.Family != IPv4 {
				t.Errorf("endpoint %v, listener %v %v", e, c.proto, p.LocalAddr())
			}
			if e.ExtIP != c.extIP {
				t.Errorf("ExtIP = %v, want %v", e.ExtIP, c.extIP)
			}
			if c.ext != e.Ext.IsValid() || (c.ext && e.Ext != netip.AddrPortFrom(ext, p.LocalAddr().Port())) {
				t.Errorf("Ext = %v, want known=%v with the listener's port", e.Ext, c.ext)
			}
		})
	}
	if eps := (&Daemon{}).Endpoints(); len(eps) != 0 {
		t.Errorf("an empty daemon lists %v", eps)
	}
}

func TestEndpointString(t *testing.T) {
	cases := []struct {
		e    Endpoint
		want string
	}{
		{Endpoint{Proto: TCP, Family: IPv4, Local: netip.MustParseAddrPort("10.0.0.2:7007"), ExtIP: netip.MustParseAddr("203.0.113.1")},
			"TCP IPv4 10.0.0.2:7007 ext 203.0.113.1:?"},
		{Endpoint{Proto: UDP, Family: IPv6, Local: netip.MustParseAddrPort("[fd00::2]:7007"), ExtIP: netip.MustParseAddr("2001:db8::1")},
			"UDP IPv6 [fd00::2]:7007 ext [2001:db8::1]:?"},
		{Endpoint{Proto: TCP, Family: IPv4, Local: netip.MustParseAddrPort("198.51.100.2:7007"),
			ExtIP: netip.MustParseAddr("198.51.100.2"), Ext: netip.MustParseAddrPort("198.51.100.2:7007")},
			"TCP IPv4 198.51.100.2:7007 ext 198.51.100.2:7007"},
		{Endpoint{Proto: TCP, Family: IPv4, Local: netip.MustParseAddrPort("127.0.0.1:1")}, "TCP IPv4 127.0.0.1:1"},
	}
	for _, c := range cases {
		if got := c.e.String(); got != c.want {
			t.Errorf("String() = %q, want %q", got, c.want)
		}
	}
}
