package p2pd

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
	"golang.org/x/sys/unix"
)

// floodConns is how many loopback connections the flood tests open.
const floodConns = 2000

// liveHeap returns HeapAlloc and HeapInuse after a collection (two: the
// first only moves pooled buffers to the pools' victim caches).
func liveHeap() (alloc, inuse uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.HeapInuse
}

// settledHeap returns liveHeap once it stops moving: a connection's
// goroutine holds a pooled buffer for a moment after it is accepted or
// reads, before it waits. Bounded: at most 50 readings.
func settledHeap() (alloc, inuse uint64) {
	alloc, inuse = liveHeap()
	for range 50 {
		time.Sleep(10 * time.Millisecond)
		a, i := liveHeap()
		if d := int64(a) - int64(alloc); -2048 < d && d < 2048 {
			return a, i
		}
		alloc, inuse = a, i
	}
	return alloc, inuse
}

// queued returns the bytes queued on a socket: unread (SIOCINQ) or, out,
// not yet acknowledged by the peer (SIOCOUTQ).
func queued(t testing.TB, c net.Conn, out bool) int {
	t.Helper()
	sc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	req := unix.SIOCINQ
	if out {
		req = unix.SIOCOUTQ
	}
	n := -1
	sc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), uint(req)) })
	return n
}

// floodDial opens n connections to srv and waits until it holds them all.
func floodDial(t *testing.T, srv *Pipe, n int) []net.Conn {
	t.Helper()
	cs := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp4", srv.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	waitUntil(t, func() bool { return srv.Stats().Conns == n }, "the server to hold %d connections", n)
	return cs
}

// sentAndRead waits until every byte written on cs has reached the server
// (acknowledged) and been read by its connections (nothing unread), so
// that what they hold is what they keep.
func sentAndRead(t *testing.T, srv *Pipe, cs []net.Conn) {
	t.Helper()
	waitUntil(t, func() bool {
		for _, c := range cs {
			if queued(t, c, true) != 0 {
				return false
			}
		}
		for _, p := range srv.Clients() {
			if queued(t, p.conn, false) != 0 {
				return false
			}
		}
		return true
	}, "the server to read what the clients sent")
}

// Connections that each send a header claiming a large frame, or a few
// bytes more, grow the server's heap with the bytes they sent, not with
// what the headers claim nor a read buffer each: heap growth over the
// same connections idle stays within the unit tests' bound per connection,
// twice its bytes plus slack (a ratio to the bytes sent of 2+slack/len,
// 18 for a 4-byte header; -race allocates small objects less tightly).
func TestFrameFloodHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	hdr := func(l uint32, extra int) []byte {
		return append(binary.BigEndian.AppendUint32(nil, l), make([]byte, extra)...)
	}
	cases := []struct {
		name    string
		payload []byte
	}{
		{"header claiming 1MiB", hdr(1<<20, 0)},
		{"header claiming 1MiB and 16 bytes", hdr(1<<20, 16)},
		{"header claiming 1KiB and 16 bytes", hdr(1<<10, 16)},
		{"3 header bytes", hdr(1<<20, 0)[:3]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{Framing: FrameLength32, MaxMsgSize: 1 << 20,
				MaxConns: -1, IdleTimeout: -1, ReadTimeout: -1, Logger: quietLogger()})
			cs := floodDial(t, srv, floodConns)
			testnet.WarmGoroutines(floodConns)
			baseAlloc, baseInuse := settledHeap()
			for _, c := range cs {
				if _, err := c.Write(tc.payload); err != nil {
					t.Fatal(err)
				}
			}
			sentAndRead(t, srv, cs)
			sent := floodConns * len(tc.payload)
			// Each connection keeps its bytes in a carry, charged to the
			// budget, just after its read: once all are charged, what they
			// hold is what they keep.
			waitUntil(t, func() bool { return srv.cfg.budget.n.Load() == int64(sent) }, "%d bytes carried", sent)
			alloc, inuse := settledHeap()
			ratio := (float64(alloc) - float64(baseAlloc)) / float64(sent)
			inuseRatio := (float64(inuse) - float64(baseInuse)) / float64(sent)
			t.Logf("%d connections, %d bytes each: heap +%.1f (HeapAlloc), +%.1f (HeapInuse) bytes per byte sent",
				floodConns, len(tc.payload), ratio, inuseRatio)
			if srv.Stats().Conns != floodConns {
				t.Fatalf("%d connections left, want %d", srv.Stats().Conns, floodConns)
			}
			if maxRatio := 2 + float64(slack)/float64(len(tc.payload)); ratio > maxRatio {
				t.Fatalf("heap grew %.0f bytes per byte sent (limit %.1f): %.1f MB for %d bytes",
					ratio, maxRatio, ratio*float64(sent)/1e6, sent)
			}
		})
	}
}

// A budget smaller than the attack: connections whose partial frames would
// take it over are closed with ErrOverBudget and counted, the others keep
// theirs within it, a legitimate client still gets its echo, and once the
// attackers leave the whole budget is back.
func TestBudgetFloodCloses(t *testing.T) {
	const n, maxBuf, extra = 200, 64 << 10, 1 << 10
	rec := newEndRec()
	rec.ended = make(chan *Pipe, n+10)
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, Framing: FrameLength32, MaxBuffered: maxBuf,
		OnEnd: rec.onEnd, IdleTimeout: -1, ReadTimeout: -1, Logger: quietLogger()})
	cs := floodDial(t, srv, n)
	payload := append(binary.BigEndian.AppendUint32(nil, 1<<20), make([]byte, extra)...)
	for _, c := range cs {
		c.Write(payload) // may fail once the server closed c
	}
	// Each survivor holds at least its bytes: at most maxBuf/len(payload)
	// survive, and every byte reaches a survivor or a closed connection.
	minClosed := uint64(n - maxBuf/len(payload))
	waitUntil(t, func() bool { return srv.Stats().OverBudget >= minClosed }, "%d connections over budget", minClosed)
	waitUntil(t, func() bool {
		st := srv.Stats()
		return uint64(st.Conns)+st.OverBudget == n && srv.cfg.budget.n.Load() == int64(st.Conns*len(payload))
	}, "survivors to carry their bytes")
	st := srv.Stats()
	if held := srv.cfg.budget.n.Load(); held > maxBuf {
		t.Fatalf("%d bytes carried, budget %d", held, maxBuf)
	}
	var overBudget uint64
	waitUntil(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		overBudget = 0
		for _, reason := range rec.reasons {
			if errors.Is(reason, ErrOverBudget) {
				overBudget++
			}
		}
		return len(rec.reasons) == int(st.OverBudget)
	}, "OnEnd of the closed connections")
	if overBudget != st.OverBudget {
		t.Fatalf("%d OnEnd reasons are ErrOverBudget, Stats().OverBudget %d", overBudget, st.OverBudget)
	}
	t.Logf("%d connections: %d closed over budget, %d hold %d bytes", n, st.OverBudget, st.Conns, srv.cfg.budget.n.Load())

	in := newInbox()
	cli := dial(t, TCP, srv.LocalAddr(), &PipeConfig{Framing: FrameLength32, OnMsg: in})
	if err := cli.Send([]byte("hello"), Peer{AddrPort: netip.AddrPort{}}); err != nil {
		t.Fatal(err)
	}
	if m := in.next(t); string(m.Data) != "hello" {
		t.Fatalf("echo %q", m.Data)
	}

	for _, c := range cs {
		c.Close()
	}
	waitUntil(t, func() bool { return srv.Stats().Conns == 1 }, "the attackers' connections to end")
	if held := srv.cfg.budget.n.Load(); held != 0 {
		t.Fatalf("%d bytes of the budget not given back", held)
	}
}
