package p2pd

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// TestFollowPoliciesSnapshot: a follow-mode ListenAll keeps the
// BestEffort and ErrorOnAF in force when it was made, while the test
// goroutine changes the Daemon's fields (run under -race: the watcher must
// not read them) and the watcher reconciles address changes:
//
//   - A (all or nothing) gets no listener for an address whose UDP port is
//     taken, not even the TCP one; B (best effort) keeps its TCP listener.
//   - A (ErrorOnAF) reports its interface serving no IPv4 once its addresses
//     are gone; B does not.
func TestFollowPoliciesSnapshot(t *testing.T) {
	n := testnet.New(t)
	a := n.AddHost("a")
	a.AddDummy(testnet.IfConfig{Name: "lan0", Addrs: []string{"10.83.0.1/24"}, NoIPv6: true})
	a.AddDummy(testnet.IfConfig{Name: "lan1", Addrs: []string{"10.84.0.1/24"}, NoIPv6: true})

	events := make(chan Event, 256)
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger()}, Follow: true, WatchInterval: time.Minute,
		OnEvent: func(e Event) { events <- e }}
	defer d.Close()
	var err error
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	blocked := map[string]netip.AddrPort{"A": netip.MustParseAddrPort("10.83.0.2:7400"), "B": netip.MustParseAddrPort("10.84.0.2:7401")}
	a.Do(t, func() {
		var lan0, lan1 *Interface
		if lan0, err = InterfaceByName("lan0"); err != nil {
			return
		}
		if lan1, err = InterfaceByName("lan1"); err != nil {
			return
		}
		d.BestEffort, d.ErrorOnAF = false, true // call A
		if _, err = d.ListenAll(context.Background(), []Target{lan0}, Ports{Port(7400)}, []Proto{TCP, UDP}, IPv4); err != nil {
			return
		}
		d.BestEffort, d.ErrorOnAF = true, false // call B
		if _, err = d.ListenAll(context.Background(), []Target{lan1}, Ports{Port(7401)}, []Proto{TCP, UDP}, IPv4); err != nil {
			return
		}
		// Someone else holds the UDP ports of addresses yet to come.
		for _, ap := range blocked {
			r := Route{Family: IPv4, NIC: []netip.Addr{ap.Addr()}, Bound: ap}
			listen(t, UDP, r, &PipeConfig{FreeBind: true, Logger: quietLogger()})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 4 {
		t.Fatalf("%v listeners, want 4", d.Listeners())
	}

	d.mu.Lock()
	w := d.watch
	d.mu.Unlock()
	// The watcher's first check, made when it started, is over: from now
	// on only the changes below trigger one.
	for deadline := time.Now().Add(waitFor); w.checks.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher made no first check")
		}
	}
	// change sets a Daemon field (set), runs an ip command and returns the
	// events of the reconcile it causes: the watcher's check count passing
	// the one before the command says that reconcile is over (the poll is a
	// minute: only the kernel's notification triggers one). Between set and
	// the watcher's reconcile nothing orders the two goroutines (no lock,
	// no channel, no atomic store on this side), so the race detector sees
	// any read of the field by the watcher.
	change := func(what string, set func(), args ...string) []Event {
		t.Helper()
		base := w.checks.Load()
		set()
		a.IP(t, args...)
		deadline := time.Now().Add(waitFor)
		for w.checks.Load() == base {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no reconcile in %v", what, waitFor)
			}
			time.Sleep(time.Millisecond)
		}
		var got []Event
		for {
			select {
			case e := <-events:
				got = append(got, e)
				t.Logf("%s: %v", what, e)
			default:
				return got
			}
		}
	}
	of := func(es []Event, port uint16) []Event { // the events of one call
		var out []Event
		for _, e := range es {
			ap := e.Spec.Route.Bound
			if e.Pipe != nil {
				ap = e.Pipe.LocalAddr()
			}
			if ap.Port() == port || ap.Port() == 0 && e.Spec.Route.Interface == map[uint16]string{7400: "lan0", 7401: "lan1"}[port] {
				out = append(out, e)
			}
		}
		return out
	}

	// BestEffort. Each change is made with the Daemon's field set against
	// the call's.
	es := of(change("A: address added", func() { d.BestEffort = true }, "addr", "add", "10.83.0.2/24", "dev", "lan0"), 7400)
	if len(es) != 1 || es[0].Kind != EventFailed || es[0].Spec.Proto != UDP || es[0].Spec.Route.Bound != blocked["A"] || !errors.Is(es[0].Err, ErrAddrInUse) {
		t.Errorf("A (all or nothing), UDP port of the new address taken: events %v, want one failed UDP %v (in use)", es, blocked["A"])
	}
	if p := d.Lookup(IPv4, TCP, 7400, ip("10.83.0.2")); p != nil {
		t.Errorf("A (all or nothing) kept a TCP listener on %v while its UDP bind failed", p.LocalAddr())
	}

	es = of(change("B: address added", func() { d.BestEffort = false }, "addr", "add", "10.84.0.2/24", "dev", "lan1"), 7401)
	var bound, failed int
	for _, e := range es {
		switch {
		case e.Kind == EventBound && e.Pipe.Proto() == TCP && e.Pipe.LocalAddr().Addr() == ip("10.84.0.2"):
			bound++
		case e.Kind == EventFailed && e.Spec.Proto == UDP && e.Spec.Route.Bound == blocked["B"] && errors.Is(e.Err, ErrAddrInUse):
			failed++
		default:
			t.Errorf("B: unexpected event %v", e)
		}
	}
	if bound != 1 || failed != 1 {
		t.Errorf("B (best effort), UDP port of the new address taken: %d bound, %d failed, want 1 TCP bound and 1 UDP failed", bound, failed)
	}
	if d.Lookup(IPv4, TCP, 7401, ip("10.84.0.2")) == nil {
		t.Error("B (best effort): no TCP listener on the new address")
	}

	// ErrorOnAF.
	es = of(change("A: addresses flushed", func() { d.ErrorOnAF = false }, "addr", "flush", "dev", "lan0"), 7400)
	var unbound, unserved int
	for _, e := range es {
		switch {
		case e.Kind == EventUnbound && e.Pipe.LocalAddr().Addr() == ip("10.83.0.1"):
			unbound++
		case e.Kind == EventFailed && e.Pipe == nil && errors.Is(e.Err, ErrFamilyUnsupported) && e.Spec.Route.Interface == "lan0":
			unserved++
		default:
			t.Errorf("A: unexpected event %v", e)
		}
	}
	if unbound != 2 || unserved != 1 {
		t.Errorf("A (ErrorOnAF), lan0 without IPv4: %d unbound, %d reported unserved, want 2 and 1", unbound, unserved)
	}

	es = of(change("B: addresses flushed", func() { d.ErrorOnAF = true }, "addr", "flush", "dev", "lan1"), 7401)
	unbound = 0
	for _, e := range es {
		if e.Kind == EventUnbound {
			unbound++
		} else {
			t.Errorf("B (no ErrorOnAF), lan1 without IPv4: unexpected event %v", e)
		}
	}
	if unbound != 3 {
		t.Errorf("B: %d unbound, want 3 (10.84.0.1 TCP and UDP, 10.84.0.2 TCP)", unbound)
	}
	if d.Len() != 0 {
		t.Errorf("%d listeners left, want 0", d.Len())
	}
}
