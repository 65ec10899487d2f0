package p2pd_test

import (
	"context"
	"net"
	"testing"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/testnet"
)

// TestZoneNotFromStaleCache binds a link-local address whose zone names an
// interface that has another index in another namespace, after Go's
// process-wide zone cache was filled from that other namespace.
func TestZoneNotFromStaleCache(t *testing.T) {
	n := testnet.New(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	a.AddDummy(testnet.IfConfig{Name: "pad0"}) // shifts a's indexes
	a.AddDummy(testnet.IfConfig{Name: "pad1"})
	n.Link(a, testnet.IfConfig{Name: "eth1", NoDAD: true}, b, testnet.IfConfig{Name: "eth1", NoDAD: true})
	if ai, bi := a.Interface(t, "eth1").Index, b.Interface(t, "eth1").Index; ai == bi {
		t.Fatalf("eth1 has index %d in both namespaces; the test needs them to differ", ai)
	}
	ll := a.LinkLocal(t, "eth1")
	b.Do(t, func() { net.Interfaces() }) // the cache now maps eth1 to b's index

	var srv *p2pd.Pipe
	a.Do(t, func() {
		ifc, err := p2pd.InterfaceByName("eth1")
		if err != nil {
			t.Fatal(err)
		}
		r := p2pd.Route{Family: p2pd.IPv6, Interface: "eth1", NIC: ifc.LinkLocals()}
		if r, err = r.BindIP(ll, 0); err != nil {
			t.Fatal(err)
		}
		b.Do(t, func() { net.Interfaces() }) // and again, right before the bind
		if srv, err = p2pd.Listen(context.Background(), p2pd.TCP, r, &p2pd.PipeConfig{OnMsg: echoCB}); err != nil {
			t.Fatal(err)
		}
	})
	defer srv.Close()
	if got := srv.LocalAddr().Addr(); got != ll {
		t.Errorf("LocalAddr = %v, want %v", got, ll)
	}
	// b reaches it through its own eth1.
	b.Do(t, func() {
		a.Do(t, func() { net.Interfaces() }) // prime the cache with a's eth1 this time
		c, err := p2pd.Dial(context.Background(), p2pd.TCP, p2pd.Route{}, ll.WithZone("eth1").String(), srv.LocalAddr().Port(), nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
}

var echoCB = p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { p.Send(msg, from) })
