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

// manySpecs returns n UDP specs on 127.0.0.1 port 0: enough for bindAll
// to hand the pipes on to a second goroutine when n ≥ pipelineAfter and
// GOMAXPROCS ≥ 2.
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

// Of two specs of a call of many that refuse each other, the later fails,
// as in a call of few.
func TestOpenManyConflictOrder(t *testing.T) {
	atLeastTwoProcs(t)
	port := hostileFreePort(t)
	wild := Route{Family: IPv4, Bound: netip.AddrPortFrom(netip.IPv4Unspecified(), port)}
	lo := Route{Family: IPv4, Bound: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}
	for round := range 5 {
		specs := manySpecs(pipelineAfter + 100)
		first, second := 7, pipelineAfter+50
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

// A call of many binds that is cancelled while binding closes what it
// opened (after the second goroutine has run it) and leaves the daemon as
// it was.
func TestOpenManyCancelled(t *testing.T) {
	atLeastTwoProcs(t)
	before := hzSocketCount(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var binds atomic.Int32
	lc := &net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if binds.Add(1) == pipelineAfter+10 {
			cancel()
		}
		return nil
	}}
	d := &Daemon{PipeConfig: PipeConfig{Logger: quietLogger(), ListenConfig: lc}}
	ps, err := d.ListenSpecific(ctx, manySpecs(2*pipelineAfter))
	if !errors.Is(err, context.Canceled) || ps != nil {
		t.Fatalf("got %d pipes, %v; want context.Canceled", len(ps), err)
	}
	if n := binds.Load(); n != pipelineAfter+10 {
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
