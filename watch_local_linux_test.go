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

// waitChecks waits, bounded, until d's address watcher has made n more
// checks of its listeners than when it was called.
func waitChecks(t *testing.T, d *Daemon, n uint64) {
	t.Helper()
	watcher := func() *addrWatcher {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.watch
	}
	deadline := time.Now().Add(waitFor)
	var base uint64
	for w := watcher(); ; w = watcher() {
		if w != nil {
			if base == 0 {
				base = w.checks.Load() + 1 // +1: never 0 once seen
			}
			if w.checks.Load()+1 >= base+n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the address watcher did not make %d checks in %v", n, waitFor)
		}
		time.Sleep(time.Millisecond)
	}
}

// noFailure fails the test on any event already queued.
func noFailure(t *testing.T, events <-chan Event, what string) {
	t.Helper()
	for {
		select {
		case e := <-events:
			t.Errorf("%s: unexpected event %v", what, e)
		default:
			return
		}
	}
}

// TestWatchLoopbackAlias: a listener on 127.0.0.2, which no interface
// has (lo has 127.0.0.1/8) but the kernel takes as local through the
// local route 127.0.0.0/8 on lo, is not reported gone. It runs in the
// process's namespace, on loopback only: no root needed.
func TestWatchLoopbackAlias(t *testing.T) {
	events := make(chan Event, 16)
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger()}, WatchInterval: 10 * time.Millisecond,
		OnEvent: func(e Event) { events <- e }}
	defer d.Close()
	ip := netip.MustParseAddr("127.0.0.2")
	ps, err := d.ListenSpecific(context.Background(), []Specific{
		{Route: Route{Family: IPv4, NIC: []netip.Addr{ip}, Bound: netip.AddrPortFrom(ip, 0)}, Proto: TCP},
		{Route: Route{Family: IPv4, NIC: []netip.Addr{ip}, Bound: netip.AddrPortFrom(ip, 0)}, Proto: UDP},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitChecks(t, d, 5)
	noFailure(t, events, "listening on 127.0.0.2, 5 checks later")
	c, err := net.DialTimeout("tcp", ps[0].LocalAddr().String(), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := echoOnce(t, c, "ping"); got != "ping" {
		t.Fatalf("echo on 127.0.0.2: %q", got)
	}
}

// TestWatchAnyIP: a listener on an address that only a local route on lo
// makes local (AnyIP: `ip route add local PREFIX dev lo`) is not reported
// gone, is reported gone (ErrAddrGone) once the route is deleted, and
// restored when it is back. IPv6 binds such an address only with FreeBind
// (the kernel checks interface addresses there); IPv4 binds it plainly.
// Route changes are not among the kernel notifications the watcher
// follows: the short WatchInterval catches them.
func TestWatchAnyIP(t *testing.T) {
	for _, tc := range []struct {
		f      Family
		prefix string
		addr   string
	}{
		{IPv4, "10.99.0.0/24", "10.99.0.5"},
		{IPv6, "2001:db8:99::/64", "2001:db8:99::5"},
	} {
		t.Run(tc.f.String(), func(t *testing.T) {
			n := testnet.New(t)
			a := n.AddHost("a")
			a.IP(t, "route", "add", "local", tc.prefix, "dev", "lo")

			events := make(chan Event, 16)
			d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger()}, WatchInterval: 10 * time.Millisecond,
				OnEvent: func(e Event) { events <- e }}
			d.FreeBind = tc.f == IPv6
			defer d.Close()
			ip := netip.MustParseAddr(tc.addr)
			r := Route{Family: tc.f, NIC: []netip.Addr{ip}, Bound: netip.AddrPortFrom(ip, 0)}
			var err error
			var ps []*Pipe
			a.Do(t, func() {
				ps, err = d.ListenSpecific(context.Background(), []Specific{{Route: r, Proto: TCP}, {Route: r, Proto: UDP}})
			})
			if err != nil {
				t.Fatal(err)
			}
			a.Do(t, func() {
				c, err := net.DialTimeout("tcp", ps[0].LocalAddr().String(), waitFor)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if got := echoOnce(t, c, "ping"); got != "ping" {
					t.Fatalf("echo on %v: %q", ip, got)
				}
			})
			waitChecks(t, d, 5)
			noFailure(t, events, "AnyIP listener, 5 checks later")
			if t.Failed() {
				return
			}

			a.IP(t, "route", "del", "local", tc.prefix, "dev", "lo")
			for _, e := range waitEvents(t, events, 2) {
				if e.Kind != EventFailed || !errors.Is(e.Err, ErrAddrGone) || e.Pipe.LocalAddr().Addr() != ip {
					t.Errorf("after deleting the local route: %v, want failed: address gone", e)
				}
			}
			a.IP(t, "route", "add", "local", tc.prefix, "dev", "lo")
			for _, e := range waitEvents(t, events, 2) {
				if e.Kind != EventRestored {
					t.Errorf("after adding the local route back: %v, want restored", e)
				}
			}
		})
	}
}
