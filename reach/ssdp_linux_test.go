package reach

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// TestSSDPOnlyOnLAN: the LAN host has a second interface, lan1, and a
// multicast route that sends 239.0.0.0/8 out of it; discovery still asks
// only on the interface of its local address (lan0, toward the router: its
// socket is bound to that address and IP_MULTICAST_IF names lan0), and a
// listener of the SSDP group behind lan1 hears nothing. With an unbound
// socket and no IP_MULTICAST_IF the search goes out of lan1 and the router
// is not found (tried).
func TestSSDPOnlyOnLAN(t *testing.T) {
	g := newGateNet(t, gateUPnP)
	side := g.net.AddHost("side")
	g.net.Link(g.lan, testnet.IfConfig{Name: "lan1", NoIPv6: true, Addrs: []string{"10.99.0.2/24"}},
		side, testnet.IfConfig{Name: "side0", NoIPv6: true, Addrs: []string{"10.99.0.1/24"}})
	g.lan.IP(t, "route", "add", "239.0.0.0/8", "dev", "lan1")

	// The listener behind lan1: every datagram to the SSDP group.
	var heard atomic.Int32
	var searches atomic.Int32
	var conn *net.UDPConn
	var err error
	side.Do(t, func() {
		var ifc *net.Interface
		if ifc, err = net.InterfaceByName("side0"); err == nil {
			conn, err = net.ListenMulticastUDP("udp4", ifc, net.UDPAddrFromAddrPort(ssdpGroup))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			heard.Add(1)
			if strings.HasPrefix(string(buf[:n]), "M-SEARCH") {
				searches.Add(1)
			}
		}
	}()
	defer func() {
		conn.Close()
		<-done
	}()

	// A socket that does not choose its interface reaches it: the marker
	// that what went out of lan1 before it has arrived.
	mark := func(want int32) {
		g.lanDo(t, func() {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ssdpGroup))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.Write([]byte("not a search"))
		})
		waitUntil(t, "the side listener hearing the route's multicast", func() bool { return heard.Load()-searches.Load() == want })
	}
	mark(1)

	var urls int
	g.lanDo(t, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		found, err := discoverIGD(ctx, g.lanIP, 3*time.Second)
		if err != nil {
			t.Errorf("discoverIGD from %v: %v", g.lanIP, err)
		}
		urls = len(found)
	})
	if urls == 0 {
		t.Fatal("the router was not found")
	}
	mark(2)
	if n := searches.Load(); n != 0 {
		t.Fatalf("%d M-SEARCH datagrams went out of lan1", n)
	}
}
