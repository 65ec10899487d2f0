//go:build linux

package p2pd

import (
	"context"
	"net/netip"
	"testing"

	"github.com/p2pd/p2pd/internal/testnet"
)

// TestNamespaceEcho runs TCP and UDP echo pipes between two network
// namespaces over IPv4, global IPv6 and link-local IPv6 with its zone.
func TestNamespaceEcho(t *testing.T) {
	n := testnet.New(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	n.Link(a, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.77.0.1/24", "2001:db8:77::1/64"}, NoDAD: true},
		b, testnet.IfConfig{Name: "eth2", Addrs: []string{"10.77.0.2/24", "2001:db8:77::2/64"}, NoDAD: true})
	llA := a.LinkLocal(t, "eth1") // zoned with eth1: valid inside a
	llB := b.LinkLocal(t, "eth2")

	cases := []struct {
		name   string
		route  Route      // a's route, bound inside a
		target netip.Addr // how b reaches a
		bRoute Route      // b's source route
	}{
		{"IPv4", Route{Family: IPv4, Interface: "eth1", NIC: []netip.Addr{netip.MustParseAddr("10.77.0.1")}},
			netip.MustParseAddr("10.77.0.1"),
			Route{Family: IPv4, Interface: "eth2", NIC: []netip.Addr{netip.MustParseAddr("10.77.0.2")}}},
		{"IPv6 global", Route{Family: IPv6, Interface: "eth1", NIC: []netip.Addr{netip.MustParseAddr("2001:db8:77::1"), llA}},
			netip.MustParseAddr("2001:db8:77::1"),
			Route{Family: IPv6, Interface: "eth2", NIC: []netip.Addr{netip.MustParseAddr("2001:db8:77::2"), llB}}},
		{"IPv6 link-local", Route{Family: IPv6, Interface: "eth1", NIC: []netip.Addr{llA}},
			llA.WithZone("eth2"), // a's address, b's interface as zone
			Route{Family: IPv6, Interface: "eth2", NIC: []netip.Addr{llB}}},
	}
	for _, c := range cases {
		for _, proto := range []Proto{TCP, UDP} {
			t.Run(c.name+"/"+proto.String(), func(t *testing.T) {
				var srv, cli *Pipe
				var err error
				a.Do(t, func() { srv, err = Listen(context.Background(), proto, c.route, &PipeConfig{OnMsg: echoCB}) })
				if err != nil {
					t.Fatal(err)
				}
				defer srv.Close()
				if srv.LocalAddr().Addr() != c.route.Addr() {
					t.Fatalf("bound %v, want %v", srv.LocalAddr(), c.route.Addr())
				}
				in := newInbox()
				b.Do(t, func() {
					cli, err = Dial(context.Background(), proto, c.bRoute, c.target.String(), srv.LocalAddr().Port(), &PipeConfig{OnMsg: in})
				})
				if err != nil {
					t.Fatal(err)
				}
				defer cli.Close()
				if cli.LocalAddr().Addr().WithZone("") != c.bRoute.Addr().WithZone("") {
					t.Fatalf("client bound %v, want %v", cli.LocalAddr(), c.bRoute.Addr())
				}
				cli.Send([]byte("across namespaces"), Peer{})
				m := in.next(t)
				if string(m.Data) != "across namespaces" || m.From.Addr().WithZone("") != c.target.WithZone("") {
					t.Fatalf("got %q from %v", m.Data, m.From)
				}
			})
		}
	}
}
