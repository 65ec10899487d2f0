package p2pd

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// spreadSpecs keeps every index once, in order within a part, and puts
// specs that could refuse each other in one part: a wildcard and the
// addresses of its protocol and port, and the same key twice. Port 0 and
// distinct keys go round the parts.
func TestSpreadSpecs(t *testing.T) {
	spec := func(proto Proto, a string) Specific {
		ap := netip.MustParseAddrPort(a)
		return Specific{Route: Route{Family: FamilyOf(ap.Addr()), Bound: ap}, Proto: proto}
	}
	specs := []Specific{
		0: spec(UDP, "127.0.0.1:0"),
		1: spec(TCP, "0.0.0.0:7000"),
		2: spec(UDP, "127.0.0.1:0"),
		3: spec(TCP, "127.0.0.1:7000"), // the wildcard's group (1)
		4: spec(UDP, "127.0.0.1:7000"), // another protocol: free
		5: spec(TCP, "[::1]:7000"),     // the wildcard's group: :: and 0.0.0.0 may share a port
		6: spec(UDP, "127.0.0.2:7001"),
		7: spec(UDP, "127.0.0.3:7001"), // another address, no wildcard: free
		8: spec(UDP, "127.0.0.2:7001"), // the same key as 6
		9: spec(UDP, "127.0.0.1:0"),
	}
	parts := spreadSpecs(specs, 3)
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	where := map[int]int{}
	for w, part := range parts {
		if !slices.IsSorted(part) {
			t.Errorf("part %d out of order: %v", w, part)
		}
		for _, i := range part {
			if _, dup := where[i]; dup {
				t.Errorf("index %d in two parts", i)
			}
			where[i] = w
		}
	}
	if len(where) != len(specs) {
		t.Fatalf("%d of %d indexes placed: %v", len(where), len(specs), parts)
	}
	for _, g := range [][]int{{1, 3, 5}, {6, 8}} {
		for _, i := range g[1:] {
			if where[i] != where[g[0]] {
				t.Errorf("spec %d in part %d, its group's first (%d) in %d: %v", i, where[i], g[0], where[g[0]], parts)
			}
		}
	}
	for w, part := range parts {
		if len(part) == 0 {
			t.Errorf("part %d empty: %v", w, parts)
		}
	}
}

// manySpecs returns n UDP specs on 127.0.0.1 port 0: enough for bindAll
// to bind in parallel when n ≥ 2*bindChunk and GOMAXPROCS ≥ 2.
func manySpecs(n int) []Specific {
	r := Route{Family: IPv4, Bound: netip.MustParseAddrPort("127.0.0.1:0")}
	return slices.Repeat([]Specific{{Route: r, Proto: UDP}}, n)
}

func atLeastTwoProcs(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		old := runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	}
}

// A call of many binds binds them in parallel, yet which of two specs that
// refuse each other fails does not depend on timing: the later one, as
// when they are bound one after another.
func TestOpenManyConflictOrder(t *testing.T) {
	atLeastTwoProcs(t)
	port := hostileFreePort(t)
	wild := Route{Family: IPv4, Bound: netip.AddrPortFrom(netip.IPv4Unspecified(), port)}
	lo := Route{Family: IPv4, Bound: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}
	for round := range 5 {
		specs := manySpecs(3 * bindChunk)
		first, second := 7, 2*bindChunk+1 // far apart: other parts without the grouping
		if round%2 == 1 {
			first, second = second, first
		}
		specs[first] = Specific{Route: wild, Proto: TCP}
		specs[second] = Specific{Route: lo, Proto: TCP}
		later := specs[max(first, second)].Route.Bound
		d := &Daemon{PipeConfig: PipeConfig{Logger: quietLogger()}}
		ps, err := d.ListenSpecific(context.Background(), specs, BestEffort(true))
		var le *ListenError
		if !errors.As(err, &le) || len(le.Failed) != 1 {
			d.Close()
			t.Fatalf("round %d: want one failed bind, got %v", round, err)
		}
		if got := le.Failed[0].Addr; got != later {
			t.Errorf("round %d: %v failed, want the later spec %v", round, got, later)
		}
		if !errors.Is(le.Failed[0], syscall.EADDRINUSE) && !errors.Is(le.Failed[0], ErrAddrInUse) {
			t.Errorf("round %d: %v", round, le.Failed[0])
		}
		if len(ps) != len(specs)-1 || d.Len() != len(specs)-1 {
			t.Errorf("round %d: %d pipes, daemon has %d, want %d", round, len(ps), d.Len(), len(specs)-1)
		}
		shutdown(t, d)
	}
}

// A call of many binds that is cancelled while binding in parallel closes
// what it opened and leaves the daemon as it was.
func TestOpenManyCancelled(t *testing.T) {
	atLeastTwoProcs(t)
	before := hzSocketCount(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var binds atomic.Int32
	lc := &net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if binds.Add(1) == bindChunk {
			cancel()
		}
		return nil
	}}
	d := &Daemon{PipeConfig: PipeConfig{Logger: quietLogger(), ListenConfig: lc}}
	ps, err := d.ListenSpecific(ctx, manySpecs(4*bindChunk))
	if !errors.Is(err, context.Canceled) || ps != nil {
		t.Fatalf("got %d pipes, %v; want context.Canceled", len(ps), err)
	}
	if n := binds.Load(); n < bindChunk || n >= 4*bindChunk {
		t.Errorf("%d binds: the call did not stop at the cancel", n)
	}
	if d.Len() != 0 {
		t.Errorf("%d listeners after a cancelled call", d.Len())
	}
	// The daemon is as it was: another call binds.
	if _, err := d.ListenSpecific(context.Background(), manySpecs(2)); err != nil {
		t.Fatal(err)
	}
	shutdown(t, d)
	if before >= 0 {
		if after := hzSocketCount(t); after != before {
			t.Errorf("%d sockets held before, %d after", before, after)
		}
	}
}

func shutdown(t *testing.T, d *Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
