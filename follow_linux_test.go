package p2pd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// TestFollow: a follow-mode daemon serving an interface gains listeners
// for an address added to it, loses those of an address removed or of the
// interface set down, ignores lifetime-only updates, and binds an IPv6
// address added with DAD on once DAD is done; the other listeners keep
// serving. The poll is set to a minute: the kernel's notifications drive
// it.
func TestFollow(t *testing.T) {
	n := testnet.New(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	n.Link(a, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.80.0.1/24"}},
		b, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.80.0.9/24"}})
	a.WaitDAD(t, "eth1")

	events := make(chan Event, 64)
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: testLogger(t)}, Follow: true, WatchInterval: time.Minute,
		OnEvent: func(e Event) { events <- e }}
	defer d.Close()
	var err error
	a.Do(t, func() {
		var ifc *Interface
		if ifc, err = InterfaceByName("eth1"); err != nil {
			return
		}
		_, err = d.ListenAll(context.Background(), []Target{ifc}, Ports{Port(7300)}, []Proto{TCP, UDP}, AnyFamily)
	})
	if err != nil {
		t.Fatal(err)
	}
	start := d.Len() // 10.80.0.1, and the link-local (no global IPv6 yet: IPv4 only)
	echoFrom := func(to netip.Addr) string {
		var got string
		b.Do(t, func() {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(to, 7300).String(), waitFor)
			if err != nil {
				got = err.Error()
				return
			}
			defer c.Close()
			got = echoOnce(t, c, "ping")
		})
		return got
	}
	expect := func(what string, kind EventKind, addr netip.Addr, count int) {
		t.Helper()
		t0 := time.Now()
		for _, e := range waitEvents(t, events, count) {
			if e.Kind != kind || e.Pipe == nil || e.Pipe.LocalAddr().Addr().WithZone("") != addr {
				t.Errorf("%s: event %v, want %v of %v", what, e, kind, addr)
			}
		}
		t.Logf("%s: %d %v events after %v", what, count, kind, time.Since(t0).Round(time.Millisecond))
	}
	if got := echoFrom(netip.MustParseAddr("10.80.0.1")); got != "ping" {
		t.Fatalf("first address: %q", got)
	}

	a.IP(t, "addr", "add", "10.80.0.2/24", "dev", "eth1")
	expect("address added", EventBound, netip.MustParseAddr("10.80.0.2"), 2)
	if d.Lookup(IPv4, TCP, 7300, netip.MustParseAddr("10.80.0.2")) == nil {
		t.Fatal("no listener for the new address")
	}
	if got := echoFrom(netip.MustParseAddr("10.80.0.2")); got != "ping" {
		t.Fatalf("new address: %q", got)
	}

	a.IP(t, "addr", "change", "10.80.0.2/24", "dev", "eth1", "valid_lft", "1000", "preferred_lft", "900")
	noEvent(t, events, 400*time.Millisecond) // lifetime only: no churn

	a.IP(t, "addr", "del", "10.80.0.2/24", "dev", "eth1")
	expect("address removed", EventUnbound, netip.MustParseAddr("10.80.0.2"), 2)
	if d.Lookup(IPv4, TCP, 7300, netip.MustParseAddr("10.80.0.2")) != nil {
		t.Fatal("the removed address still has a listener")
	}
	if got := echoFrom(netip.MustParseAddr("10.80.0.1")); got != "ping" {
		t.Fatalf("the other address stopped serving: %q", got)
	}

	// IPv6 with DAD: bound when DAD is done, not before; the interface
	// now serves IPv6, so its link-local address is bound too.
	b.AddAddr(t, "eth1", "2001:db8:80::9/64", true)
	a.IP(t, "addr", "add", "2001:db8:80::1/64", "dev", "eth1")
	t0 := time.Now()
	for _, e := range waitEvents(t, events, 4) {
		if ip := e.Pipe.LocalAddr().Addr(); e.Kind != EventBound || ip != netip.MustParseAddr("2001:db8:80::1") && !ip.IsLinkLocalUnicast() {
			t.Errorf("IPv6 added: %v", e)
		}
	}
	out := a.IP(t, "-6", "addr", "show", "dev", "eth1")
	if strings.Contains(string(out), "tentative") {
		t.Errorf("bound while still tentative:\n%s", out)
	}
	t.Logf("IPv6 address bound %v after it was added (DAD)", time.Since(t0).Round(time.Millisecond))
	if got := echoFrom(netip.MustParseAddr("2001:db8:80::1")); got != "ping" {
		t.Fatalf("IPv6 address: %q", got)
	}

	before := d.Len()
	a.SetDown(t, "eth1")
	waitEvents(t, events, before) // every listener of the interface goes
	if d.Len() != 0 {
		t.Fatalf("%d listeners left with the interface down", d.Len())
	}
	a.SetUp(t, "eth1")
	a.WaitDAD(t, "eth1")
	deadline := time.Now().Add(waitFor)
	for d.Len() < start && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := echoFrom(netip.MustParseAddr("10.80.0.1")); got != "ping" {
		t.Fatalf("after the interface came back: %q (%d listeners)", got, d.Len())
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) { w.t.Logf("%s", b); return len(b), nil }

// TestFollowDuplicateReported: in follow mode, an address added to a
// followed interface that turns out to be a duplicate (DAD fails) is not
// bound, and is reported once.
func TestFollowDuplicateReported(t *testing.T) {
	n := testnet.New(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	n.Link(a, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.81.0.1/24"}},
		b, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.81.0.9/24"}})
	a.WaitDAD(t, "eth1")
	b.AddAddr(t, "eth1", "2001:db8:81::5/64", true)
	events := make(chan Event, 16)
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger()}, Follow: true, WatchInterval: time.Minute,
		OnEvent: func(e Event) { events <- e }}
	defer d.Close()
	var err error
	a.Do(t, func() {
		var ifc *Interface
		if ifc, err = InterfaceByName("eth1"); err == nil {
			_, err = d.ListenAll(context.Background(), []Target{ifc}, Ports{Port(7301)}, []Proto{UDP}, AnyFamily)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	a.IP(t, "addr", "add", "2001:db8:81::5/64", "dev", "eth1") // DAD on: b has it
	e := waitEvents(t, events, 1)[0]
	if e.Kind != EventFailed || !errors.Is(e.Err, ErrDADFailed) || e.Spec.Route.Bound.Addr() != netip.MustParseAddr("2001:db8:81::5") {
		t.Fatalf("event %v, want a failed DAD of 2001:db8:81::5", e)
	}
	if d.Lookup(IPv6, UDP, 7301, netip.MustParseAddr("2001:db8:81::5")) != nil {
		t.Fatal("a duplicate address was bound")
	}
	noEvent(t, events, 300*time.Millisecond) // reported once
}
