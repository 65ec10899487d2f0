package p2pd

import (
	"context"
	"net/netip"
	"testing"

	"github.com/p2pd/p2pd/internal/testnet"
)

// TestLookupLinkLocalWithoutZone: a link-local address without its zone
// finds the listener while one interface has it, and nothing once two do.
func TestLookupLinkLocalWithoutZone(t *testing.T) {
	n := testnet.New(t)
	a := n.AddHost("a")
	a.AddDummy(testnet.IfConfig{Name: "lan0", Addrs: []string{"fe80::99/64"}, NoDAD: true})
	a.AddDummy(testnet.IfConfig{Name: "lan1", Addrs: []string{"fe80::99/64"}, NoDAD: true})
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger()}, WatchInterval: -1}
	defer d.Close()
	ll := netip.MustParseAddr("fe80::99")
	bind := func(zone string) *Pipe {
		var p *Pipe
		var err error
		a.Do(t, func() {
			p, err = d.AddListener(context.Background(), UDP, Route{Family: IPv6, Bound: netip.AddrPortFrom(ll.WithZone(zone), 7600)})
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p0 := bind("lan0")
	if got := d.Lookup(IPv6, UDP, 7600, ll); got != p0 {
		t.Fatalf("Lookup without zone, one interface: %v, want %v", got, p0)
	}
	p1 := bind("lan1")
	if got := d.Lookup(IPv6, UDP, 7600, ll); got != nil {
		t.Fatalf("Lookup without zone, two interfaces: %v, want nil (the zone is needed)", got.LocalAddr())
	}
	if d.Lookup(IPv6, UDP, 7600, ll.WithZone("lan0")) != p0 || d.Lookup(IPv6, UDP, 7600, ll.WithZone("lan1")) != p1 {
		t.Fatal("Lookup with the zone")
	}
}
