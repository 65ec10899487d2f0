package p2pd

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// dstRec is an echo callback that records where each datagram was sent.
type dstRec struct {
	mu  sync.Mutex
	dst map[string]netip.AddrPort // payload → to
}

func (r *dstRec) MsgCB(msg []byte, from Peer, p *Pipe) {
	r.mu.Lock()
	r.dst[string(msg)] = from.Local
	r.mu.Unlock()
	p.Send(msg, from)
}

// TestWildcardUDPRepliesFromDestination: a host with two addresses per
// family on one interface serves UDP on the wildcard; a client of each
// address, with a connected socket (which drops datagrams from any other
// source), gets its echo from the address it asked, and the callback
// learns that address. Without IP_PKTINFO the kernel would answer the
// secondary address's clients from the primary one.
func TestWildcardUDPRepliesFromDestination(t *testing.T) {
	n := testnet.New(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	n.Link(a, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.91.0.1/24", "10.91.0.2/24", "2001:db8:91::1/64", "2001:db8:91::2/64"}, NoDAD: true},
		b, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.91.0.9/24", "2001:db8:91::9/64"}, NoDAD: true})
	llA := a.LinkLocal(t, "eth1")

	rec := &dstRec{dst: make(map[string]netip.AddrPort)}
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: rec}}
	defer d.Close()
	var err error
	a.Do(t, func() {
		_, err = d.ListenSpecific(context.Background(), []Specific{
			{Proto: UDP, Route: Route{Family: IPv4, Bound: netip.MustParseAddrPort("0.0.0.0:7100")}},
			{Proto: UDP, Route: Route{Family: IPv6, Bound: netip.MustParseAddrPort("[::]:7100")}},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []netip.Addr{
		netip.MustParseAddr("10.91.0.1"), netip.MustParseAddr("10.91.0.2"),
		netip.MustParseAddr("2001:db8:91::1"), netip.MustParseAddr("2001:db8:91::2"),
		llA.WithZone("eth1"), // a's link-local, from b through b's eth1
	} {
		t.Run(to.String(), func(t *testing.T) {
			msg := "hello " + to.String()
			var got string
			b.Do(t, func() {
				c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 7100)))
				if err != nil {
					got = err.Error()
					return
				}
				defer c.Close()
				buf := make([]byte, 256)
				for range 3 { // UDP: a first datagram may meet neighbour discovery
					c.Write([]byte(msg))
					c.SetReadDeadline(time.Now().Add(time.Second))
					if n, err := c.Read(buf); err == nil {
						got = string(buf[:n])
						return
					} else {
						got = err.Error()
					}
				}
			})
			if got != msg {
				t.Fatalf("client of %v: %q", to, got)
			}
			rec.mu.Lock()
			dst := rec.dst[msg]
			rec.mu.Unlock()
			if dst.Addr().WithZone("") != to.WithZone("") || dst.Port() != 7100 {
				t.Errorf("callback's to %v, want %v:7100", dst, to)
			}
			if to.IsLinkLocalUnicast() && dst.Addr().Zone() != "eth1" {
				t.Errorf("link-local to %v has zone %q, want eth1 (a's interface)", dst, dst.Addr().Zone())
			}
		})
	}
}
