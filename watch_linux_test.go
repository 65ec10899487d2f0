package p2pd

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// waitEvents collects events until want of them arrived (or fails).
func waitEvents(t *testing.T, ch <-chan Event, want int) []Event {
	t.Helper()
	var got []Event
	deadline := time.After(waitFor)
	for len(got) < want {
		select {
		case e := <-ch:
			got = append(got, e)
		case <-deadline:
			t.Fatalf("got %d of %d events: %v", len(got), want, got)
		}
	}
	return got
}

func noEvent(t *testing.T, ch <-chan Event, d time.Duration) {
	t.Helper()
	select {
	case e := <-ch:
		t.Fatalf("unexpected event %v", e)
	case <-time.After(d):
	}
}

// TestWatchAddrRemoved: a daemon bound inside a namespace (not the
// process's) reports the listeners of an address that is removed, then
// restored, and of an interface set down, while the other listeners go on
// serving; Close stops the watcher (goleak checks).
func TestWatchAddrRemoved(t *testing.T) {
	n := testnet.New(t)
	a := n.AddHost("a")
	a.AddDummy(testnet.IfConfig{Name: "lan0", Addrs: []string{"10.78.0.1/24", "10.78.0.2/24"}})
	a.AddDummy(testnet.IfConfig{Name: "lan1", Addrs: []string{"10.79.0.1/24"}})

	events := make(chan Event, 16)
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger()}, WatchInterval: 20 * time.Millisecond,
		OnEvent: func(e Event) { events <- e }}
	defer d.Close()
	var err error
	var gone, kept []*Pipe
	a.Do(t, func() {
		r2 := Route{Family: IPv4, Interface: "lan0", NIC: []netip.Addr{netip.MustParseAddr("10.78.0.2")}}
		r3 := Route{Family: IPv4, Interface: "lan1", NIC: []netip.Addr{netip.MustParseAddr("10.79.0.1")}}
		if gone, err = d.ListenAll(context.Background(), []Target{r2}, Ports{Port(7000)}, []Proto{TCP, UDP}, IPv4); err != nil {
			return
		}
		kept, err = d.ListenAll(context.Background(), []Target{r3}, Ports{Port(7000)}, []Proto{TCP, UDP}, IPv4)
	})
	if err != nil {
		t.Fatal(err)
	}
	echo := func(to netip.AddrPort) string {
		var got string
		a.Do(t, func() {
			c, err := net.DialTimeout("tcp", to.String(), waitFor)
			if err != nil {
				got = err.Error()
				return
			}
			defer c.Close()
			got = echoOnce(t, c, "ping")
		})
		return got
	}
	noEvent(t, events, 100*time.Millisecond) // all there: nothing to say

	a.DelAddr(t, "lan0", "10.78.0.2/24")
	for _, e := range waitEvents(t, events, 2) {
		if e.Kind != EventFailed || !errors.Is(e.Err, ErrAddrGone) || e.Pipe.LocalAddr().Addr() != netip.MustParseAddr("10.78.0.2") {
			t.Errorf("after removing 10.78.0.2: %v", e)
		}
	}
	if got := echo(kept[0].LocalAddr()); got != "ping" {
		t.Fatalf("another listener stopped serving: %q", got)
	}
	noEvent(t, events, 100*time.Millisecond)

	a.AddAddr(t, "lan0", "10.78.0.2/24", true)
	for _, e := range waitEvents(t, events, 2) {
		if e.Kind != EventRestored || e.Err != nil {
			t.Errorf("after restoring 10.78.0.2: %v", e)
		}
	}
	// The same sockets serve again: no rebind was needed.
	for _, p := range gone {
		if p.Proto() == TCP {
			if got := echo(p.LocalAddr()); got != "ping" {
				t.Fatalf("restored listener: %q", got)
			}
		}
	}

	a.SetDown(t, "lan1")
	for _, e := range waitEvents(t, events, 2) {
		if e.Kind != EventFailed || !errors.Is(e.Err, ErrLinkDown) || e.Pipe.LocalAddr().Addr() != netip.MustParseAddr("10.79.0.1") {
			t.Errorf("after lan1 down: %v", e)
		}
	}
	a.SetUp(t, "lan1")
	waitEvents(t, events, 2)

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	noEvent(t, events, 100*time.Millisecond)
}

// TestUDPRecvDropped: datagrams the kernel drops for a full receive buffer
// are counted, and the pipe answers again once the flood is over.
func TestUDPRecvDropped(t *testing.T) {
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		if string(msg) == "block" {
			blocked <- struct{}{}
			<-release
			return
		}
		p.Send(msg, from)
	})
	srv := listen(t, UDP, loopRoute(t, IPv4), &PipeConfig{OnMsg: cb})
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(srv.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("block"))
	<-blocked
	msg := make([]byte, 64)
	for range 5000 { // far more than a default receive buffer holds
		c.Write(msg)
	}
	if d := srv.Stats().RecvDropped; d == 0 {
		t.Fatal("no drop counted after 5000 datagrams to a blocked socket")
	} else {
		t.Logf("%d of 5000 datagrams dropped by the kernel", d)
	}
	close(release)
	// Drain what was queued, then a normal exchange works.
	deadline := time.Now().Add(waitFor)
	buf := make([]byte, 128)
	for time.Now().Before(deadline) {
		c.Write([]byte("again"))
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == "again" {
				return
			}
		}
	}
	t.Fatal("no answer after the flood")
}
