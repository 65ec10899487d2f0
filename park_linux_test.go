package p2pd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// parkedConns returns how many connections wait in p's parker.
func parkedConns(p *Pipe) int {
	k := p.cfg.park
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, c := range k.parked {
		if c.ln == nil {
			n++
		}
	}
	return n
}

// endCount counts OnEnd calls of connections by reason.
type endCount struct {
	mu      sync.Mutex
	reasons []error
}

func (e *endCount) onEnd(p *Pipe, reason error) {
	if p.IsServer() {
		return
	}
	e.mu.Lock()
	e.reasons = append(e.reasons, reason)
	e.mu.Unlock()
}

func (e *endCount) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprint(e.reasons)
}

func (e *endCount) count(match func(error) bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, r := range e.reasons {
		if match(r) {
			n++
		}
	}
	return n
}

// Idle connections hold no goroutine: those that have sent nothing park at
// once, those that talked park after parkAfter of silence; each is served
// again when it sends (twice here, so the second park re-arms the epoll
// entry), and Close ends them all, each with one OnEnd.
func TestIdleConnsPark(t *testing.T) {
	const n = 200
	var ends endCount
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, OnEnd: ends.onEnd, Logger: quietLogger()})
	base := runtime.NumGoroutine()
	cs := connectN(t, srv.LocalAddr(), n/2) // they talked
	for range n / 2 {                       // these never did
		c, err := net.Dial("tcp", srv.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	waitUntil(t, func() bool { return srv.Stats().Conns == n }, "%d connections", n)
	waitUntil(t, func() bool { return parkedConns(srv) == n }, "%d parked connections (%d now)", n, parkedConns(srv))
	// The parker's goroutine, and slack for goroutines ending.
	if g := runtime.NumGoroutine(); g > base+n/10 {
		t.Fatalf("%d goroutines with %d parked connections, %d before", g, n, base)
	}
	for round := range 2 {
		for i, c := range cs {
			msg := fmt.Sprintf("round %d conn %d", round, i)
			if got := echoOnce(t, c, msg); got != msg {
				t.Fatalf("echo %q, got %q", msg, got)
			}
		}
		waitUntil(t, func() bool { return parkedConns(srv) == n }, "%d parked again (%d now)", n, parkedConns(srv))
	}
	srv.Close()
	waitDone(t, srv)
	if got := ends.count(func(err error) bool { return err == nil }); got != n {
		t.Fatalf("%d OnEnd with a nil reason, want %d (all: %v)", got, n, &ends)
	}
	if got := parkedConns(srv); got != 0 {
		t.Fatalf("%d still parked after Close", got)
	}
}

// A parked connection still meets its IdleTimeout, whether it parked at
// once (it never sent) or after talking; the parker ends with the last.
func TestParkedIdleTimeout(t *testing.T) {
	var ends endCount
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, OnEnd: ends.onEnd,
		IdleTimeout: parkAfter + time.Second, Logger: quietLogger()})
	cs := connectN(t, srv.LocalAddr(), 2)
	if got := echoOnce(t, cs[1], "x"); got != "x" {
		t.Fatalf("echo: %q", got)
	}
	for i, c := range cs {
		c.SetReadDeadline(time.Now().Add(4 * waitFor))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("conn %d: read %v, want EOF from the idle timeout", i, err)
		}
	}
	waitUntil(t, func() bool { return ends.count(func(err error) bool { return errors.Is(err, ErrIdleTimeout) }) == 2 },
		"two idle timeouts (ends: %v)", &ends)
	if n := parkedConns(srv); n != 0 {
		t.Fatalf("%d connections still parked", n)
	}
}

// A peer that closes a parked connection ends it (io.EOF); Shutdown ends
// the parked ones that are left, each with a nil reason, and returns.
func TestParkedPeerCloseAndShutdown(t *testing.T) {
	var ends endCount
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, OnEnd: ends.onEnd, Logger: quietLogger()})
	cs := connectN(t, srv.LocalAddr(), 3)
	waitUntil(t, func() bool { return parkedConns(srv) == 3 }, "3 parked")
	cs[0].Close()
	waitUntil(t, func() bool { return ends.count(func(err error) bool { return errors.Is(err, io.EOF) }) == 1 },
		"an EOF (ends: %v)", &ends)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := ends.count(func(err error) bool { return err == nil }); got != 2 {
		t.Fatalf("%d nil reasons after Shutdown, want 2 (ends: %v)", got, &ends)
	}
}

// A full server evicts a parked connection for a newcomer.
func TestParkedEvicted(t *testing.T) {
	var ends endCount
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, OnEnd: ends.onEnd, MaxConns: 2, Logger: quietLogger()})
	connectN(t, srv.LocalAddr(), 2)
	waitUntil(t, func() bool { return parkedConns(srv) == 2 }, "2 parked")
	time.Sleep(evictAfter + 100*time.Millisecond) // silent long enough to be evicted
	c, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := echoOnce(t, c, "new"); got != "new" {
		t.Fatalf("newcomer: %q", got)
	}
	waitUntil(t, func() bool { return ends.count(func(err error) bool { return errors.Is(err, ErrEvicted) }) == 1 },
		"an eviction (ends: %v)", &ends)
}

// Eviction picks the connection silent longest by its last received
// bytes: a read deadline that fires early (set a quarter ahead, see
// readLoop) does not count as traffic. A talks at once and goes silent, B
// talks later; when C comes, the server is full and A, silent longer, goes
// (with the deadline counted as traffic, A looked recent at 2 s and B went).
func TestEvictSilentLongest(t *testing.T) {
	var mu sync.Mutex
	var evicted []netip.AddrPort
	onEnd := func(p *Pipe, reason error) {
		if !p.IsServer() && errors.Is(reason, ErrEvicted) {
			mu.Lock()
			evicted = append(evicted, p.RemoteAddr())
			mu.Unlock()
		}
	}
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, OnEnd: onEnd, MaxConns: 2, Logger: quietLogger()})
	start := time.Now()
	a := connectN(t, srv.LocalAddr(), 1)[0]
	if got := echoOnce(t, a, "a"); got != "a" {
		t.Fatalf("a: %q", got)
	}
	time.Sleep(evictAfter + 200*time.Millisecond)
	b := connectN(t, srv.LocalAddr(), 1)[0]
	if got := echoOnce(t, b, "b"); got != "b" {
		t.Fatalf("b: %q", got)
	}
	// Past A's first read deadline (parkAfter after it began), with B
	// silent for more than evictAfter.
	time.Sleep(time.Until(start.Add(parkAfter + 500*time.Millisecond)))
	c := connectN(t, srv.LocalAddr(), 1)[0]
	if got := echoOnce(t, c, "c"); got != "c" {
		t.Fatalf("newcomer: %q", got)
	}
	aAddr := netip.MustParseAddrPort(a.LocalAddr().String())
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(evicted) == 1 }, "an eviction")
	mu.Lock()
	defer mu.Unlock()
	if evicted[0] != aAddr {
		t.Fatalf("evicted %v, want A (%v), silent longest; B is %v", evicted[0], aAddr, b.LocalAddr())
	}
}

// Connections park, wake and close from many goroutines at once, and a
// callback closes its own connection: each ends once, nothing is left
// parked, and no goroutine leaks (TestMain).
func TestParkRace(t *testing.T) {
	const n = 64
	var ends endCount
	cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		if string(msg) == "close" {
			p.Close()
			return
		}
		p.Send(msg, from)
	})
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: cb, OnEnd: ends.onEnd, Logger: quietLogger()})
	cs := connectN(t, srv.LocalAddr(), n)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				if j%4 == 0 {
					time.Sleep(time.Millisecond) // let it park
				}
				// The server may have closed it meanwhile.
				if got := echoOnce(t, c, "x"); got != "x" {
					if !strings.HasPrefix(got, "read: ") && !strings.HasPrefix(got, "write: ") {
						t.Errorf("conn %d: %q", i, got)
					}
					return
				}
			}
			if i%2 == 0 {
				c.Write([]byte("close"))
			}
		}()
	}
	for _, p := range srv.Clients()[:n/4] {
		go p.Close()
	}
	wg.Wait()
	srv.Close()
	waitDone(t, srv)
	if got := ends.count(func(error) bool { return true }); got != n {
		t.Fatalf("%d OnEnd calls, want %d", got, n)
	}
	if got := parkedConns(srv); got != 0 {
		t.Fatalf("%d still parked", got)
	}
}

// Idle listeners hold no goroutine either: ListenAll of many ports starts
// none per listener, each still accepts and serves, and Close ends them
// all (OnEnd once each) and the parker with them.
func TestIdleListenersPark(t *testing.T) {
	const n = 50
	var mu sync.Mutex
	ended := 0
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger(), OnEnd: func(p *Pipe, _ error) {
		if p.IsServer() {
			mu.Lock()
			ended++
			mu.Unlock()
		}
	}}}
	defer d.Close()
	base := runtime.NumGoroutine()
	r := Route{Family: IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	var ls []*Pipe
	for len(ls) < n {
		more, err := d.ListenAll(context.Background(), []Target{r}, Ports{Port(0)}, []Proto{TCP}, IPv4)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, more...)
	}
	// The parker's and the address watcher's goroutines, and slack.
	if g := runtime.NumGoroutine(); g > base+n/5 {
		t.Fatalf("%d goroutines with %d listeners, %d before", g, n, base)
	}
	for _, l := range ls {
		c, err := net.Dial("tcp", l.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		if got := echoOnce(t, c, "hi"); got != "hi" {
			t.Fatalf("%v: echo %q", l.LocalAddr(), got)
		}
		c.Close()
	}
	d.Close()
	for _, l := range ls {
		waitDone(t, l)
	}
	mu.Lock()
	defer mu.Unlock()
	if ended != len(ls) {
		t.Fatalf("%d listener OnEnd calls, want %d", ended, len(ls))
	}
	k := &d.park
	waitUntil(t, func() bool { k.mu.Lock(); defer k.mu.Unlock(); return k.f == nil }, "the parker to stop")
}

// An idle UDP server socket parks too: it is served again when datagrams
// come, parks after parkAfter of silence, and Close and Shutdown end it.
func TestIdleUDPParks(t *testing.T) {
	srv := listen(t, UDP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, Logger: quietLogger()})
	parked := func() bool {
		k := srv.cfg.park
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.parked[srv.parkID] == srv
	}
	waitUntil(t, parked, "the UDP socket to park")
	c, err := net.Dial("udp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for round := range 2 {
		if got := echoOnce(t, c, fmt.Sprint("datagram ", round)); got != fmt.Sprint("datagram ", round) {
			t.Fatalf("round %d: %q", round, got)
		}
		waitUntil(t, parked, "the UDP socket to park again")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown of a parked UDP socket: %v", err)
	}
}
