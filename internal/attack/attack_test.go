package attack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/testnet"
)

// TestMain runs the attacks, prints their figures as a Markdown table and
// fails the run if any goroutine is left.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	if len(figures) > 0 {
		fmt.Println("\n| attack | default it meets | result |\n| --- | --- | --- |")
		for _, f := range figures {
			fmt.Printf("| %s | %s | %s |\n", f.attack, f.setting, f.result)
		}
	}
	os.Exit(code)
}

type figure struct{ attack, setting, result string }

var (
	figMu   sync.Mutex
	figures []figure
)

func record(t *testing.T, attack, setting, format string, a ...any) {
	r := fmt.Sprintf(format, a...)
	t.Log(attack + ": " + r)
	figMu.Lock()
	figures = append(figures, figure{attack, setting, r})
	figMu.Unlock()
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var echo = p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { p.Send(msg, from) })

func loopback(t *testing.T) p2pd.Route {
	t.Helper()
	r, err := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func listen(t *testing.T, proto p2pd.Proto, c *p2pd.PipeConfig) *p2pd.Pipe {
	t.Helper()
	p, err := p2pd.Listen(context.Background(), proto, loopback(t), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return p
}

// dialN opens n TCP connections to addr, closed at the test's end.
func dialN(t *testing.T, addr netip.AddrPort, n int) []net.Conn {
	t.Helper()
	cs := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// heap returns the live heap after a GC, once it has stopped changing
// (the server's goroutines may still be reading what was sent): three
// readings in a row within 1%, or the last one after 5 s.
func heap() int64 {
	var last int64
	stable := 0
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && stable < 3 {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h := int64(ms.HeapAlloc)
		if d := h - last; d < 0 && -d < h/100 || d >= 0 && d < h/100 {
			stable++
		} else {
			stable = 0
		}
		last = h
		time.Sleep(50 * time.Millisecond)
	}
	return last
}

// echoFramed sends one FrameLength32 message on a new connection and
// checks it comes back.
func echoFramed(t *testing.T, addr netip.AddrPort, msg string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	if _, err := c.Write(append(frame, msg...)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4+len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got[4:]) != msg {
		t.Fatalf("a legitimate client during the attack: %q, %v", got, err)
	}
}

// TestAttackLengthHeaders: 2,000 connections each send only a 4-byte
// length prefix that claims 1 MiB. The daemon's heap grows with the bytes
// received, not with what the headers claim, and a legitimate client is
// served meanwhile.
func TestAttackLengthHeaders(t *testing.T) {
	const n = 2000
	srv := listen(t, p2pd.TCP, &p2pd.PipeConfig{Framing: p2pd.FrameLength32, OnMsg: echo, Logger: quiet})
	h0 := heap()
	cs := dialN(t, srv.LocalAddr(), n)
	waitFor(t, "connections", func() bool { return srv.Stats().Conns == n })
	// Silent connections park without a goroutine; the headers wake each
	// into one (a partial frame is read on a goroutine). The runtime makes
	// its goroutine structures once, at its highest count, and keeps them:
	// run that many first, so that h2-h1 is what the bytes cost.
	testnet.WarmGoroutines(n)
	h1 := heap()
	hdr := binary.BigEndian.AppendUint32(nil, 1<<20)
	for _, c := range cs {
		if _, err := c.Write(hdr); err != nil {
			t.Fatal(err)
		}
	}
	h2 := heap()
	echoFramed(t, srv.LocalAddr(), "legit")
	sent := int64(n * len(hdr))
	held := h2 - h1
	perByte := float64(held) / float64(sent)
	record(t, "header-only length flood: 2,000 connections × 4 B, each claiming 1 MiB",
		"`FrameLength32`, `MaxMsgSize` 1 MiB, `MaxBuffered` 64 MiB",
		"%.1f B of heap per byte sent (%d B for %d B; a silent connection costs %d B); a legitimate client served",
		perByte, held, sent, (h1-h0)/n)
	// Memory tracks bytes received: at most a small constant per byte
	// (the carried bytes and their slice), never the 1 MiB claimed.
	if perByte > 16 {
		t.Fatalf("%.1f B of heap per byte sent, want at most 16", perByte)
	}
}

// TestAttackBudget: 400 connections each send a header claiming 64 KiB
// and 8 KiB of it, 3.2 MB in all, against a 1 MiB budget for partial
// frames. The budget holds: the connections over it are closed and
// counted, and a legitimate client is served.
func TestAttackBudget(t *testing.T) {
	const n, part, budget = 400, 8 << 10, 1 << 20
	srv := listen(t, p2pd.TCP, &p2pd.PipeConfig{Framing: p2pd.FrameLength32, OnMsg: echo, Logger: quiet, MaxBuffered: budget})
	cs := dialN(t, srv.LocalAddr(), n)
	waitFor(t, "connections", func() bool { return srv.Stats().Conns == n })
	h1 := heap()
	msg := append(binary.BigEndian.AppendUint32(nil, 64<<10), bytes.Repeat([]byte("p"), part)...)
	for _, c := range cs {
		c.Write(msg)
	}
	waitFor(t, "partial frames read", func() bool {
		s := srv.Stats()
		return s.OverBudget > 0 && int(s.OverBudget)+s.Conns == n
	})
	h2 := heap()
	s := srv.Stats()
	echoFramed(t, srv.LocalAddr(), "legit")
	held := h2 - h1
	record(t, "partial frames over the budget: 400 connections × 8 KiB of 64 KiB frames (3.2 MB)",
		"`MaxBuffered` set to 1 MiB (default 64 MiB)",
		"%d connections closed with `ErrOverBudget` and counted, %d kept; heap +%d KiB (budget 1,024 KiB); a legitimate client served",
		s.OverBudget, s.Conns, held>>10)
	if held > budget*3/2 {
		t.Fatalf("heap grew by %d B, budget %d", held, budget)
	}
}

// TestAttackNonReader: 20 peers each ask for a large reply and never read.
// Each is closed once it has taken nothing for WriteTimeout, with
// ErrWriteTimeout, and Shutdown is not held up.
func TestAttackNonReader(t *testing.T) {
	const n, wt = 20, time.Second
	big := bytes.Repeat([]byte("r"), 1<<20)
	var mu sync.Mutex
	var least, worst time.Duration
	var timedOut atomic.Int32
	srv := listen(t, p2pd.TCP, &p2pd.PipeConfig{WriteTimeout: wt, Logger: quiet,
		OnMsg: p2pd.MsgCallbackFunc(func(_ []byte, from p2pd.Peer, p *p2pd.Pipe) {
			start := time.Now()
			for range 256 {
				if err := p.Send(big, from); err != nil {
					if errors.Is(err, p2pd.ErrWriteTimeout) {
						timedOut.Add(1)
						took := time.Since(start)
						mu.Lock()
						worst = max(worst, took)
						if least == 0 || took < least {
							least = took
						}
						mu.Unlock()
					}
					return
				}
			}
		})})
	cs := dialN(t, srv.LocalAddr(), n)
	for _, c := range cs {
		c.(*net.TCPConn).SetReadBuffer(4096)
		c.Write([]byte("everything, please"))
	}
	waitFor(t, "non-readers closed", func() bool { return timedOut.Load() == n })
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	record(t, "peers that ask for replies and never read: 20",
		"`WriteTimeout` set to 1 s (default 30 s)",
		"%d of %d closed with `ErrWriteTimeout`, %v to %v after their request (the socket buffers fill first, then nothing moves for 1 s); Shutdown then took %v",
		timedOut.Load(), n, least.Round(10*time.Millisecond), worst.Round(10*time.Millisecond), time.Since(t0).Round(time.Millisecond))
}

// TestAttackSourceFlood: a wildcard UDP listener answers 100 clients that
// wrote to 127.0.0.5 long after they asked, from another goroutine, while
// 10,000 other sources wrote to 127.0.0.1: every reply leaves from
// 127.0.0.5 (the clients' connected sockets drop any other).
func TestAttackSourceFlood(t *testing.T) {
	const clients, sources = 100, 10000
	n := testnet.New(t)
	a := n.AddHost("a")
	var mu sync.Mutex
	var kept []p2pd.Peer
	var flood atomic.Int64
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{Logger: quiet, OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		if strings.HasPrefix(string(msg), "ask") {
			mu.Lock()
			kept = append(kept, from)
			mu.Unlock()
			return
		}
		flood.Add(1)
	})}}
	defer d.Close()
	var ls []*p2pd.Pipe
	var cs []*net.UDPConn
	var err error
	a.Do(t, func() {
		ls, err = d.ListenSpecific(context.Background(), []p2pd.Specific{
			{Proto: p2pd.UDP, Route: p2pd.Route{Family: p2pd.IPv4, Bound: netip.MustParseAddrPort("0.0.0.0:7500")}},
		})
		for range clients {
			if err != nil {
				return
			}
			var c *net.UDPConn
			c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 5), Port: 7500})
			cs = append(cs, c)
		}
	})
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		c.Write([]byte("ask"))
	}
	waitFor(t, "requests", func() bool { mu.Lock(); defer mu.Unlock(); return len(kept) == clients })
	a.Do(t, func() {
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7500}
		for i := range sources {
			c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%200))}, to)
			if err != nil {
				t.Error(err)
				return
			}
			c.Write([]byte("flood"))
			c.Close()
			if i%500 == 499 {
				waitFor(t, "flood read", func() bool { return flood.Load()+int64(ls[0].Stats().RecvDropped) > int64(i) })
			}
		}
	})
	waitFor(t, "flood read", func() bool { return flood.Load()+int64(ls[0].Stats().RecvDropped) >= sources })
	for _, p := range kept {
		if err := ls[0].Send([]byte("answer"), p); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	deadline := time.Now().Add(3 * time.Second)
	for _, c := range cs {
		c.SetReadDeadline(deadline)
		buf := make([]byte, 16)
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "answer" {
			got++
		}
	}
	record(t, "delayed replies on wildcard UDP under a flood from 10,000 sources",
		"`Peer` kept by the callback, answered later from another goroutine",
		"%d of %d replies from the address the client wrote to (flood: %d handled, %d dropped by the kernel)",
		got, clients, flood.Load(), ls[0].Stats().RecvDropped)
	if got != clients {
		t.Fatalf("%d of %d replies reached their clients", got, clients)
	}
}

// TestAttackKeptMsg: a callback that keeps every msg slice (the bug the
// contract warns of) while 16 clients send 500 datagrams each: reading
// every kept slice after the pipe closed and the GC ran finds stale bytes
// at worst, never a crash.
func TestAttackKeptMsg(t *testing.T) {
	const clients, each = 16, 500
	var mu sync.Mutex
	var kept [][]byte
	var want []string
	srv, err := p2pd.Listen(context.Background(), p2pd.UDP, loopback(t), &p2pd.PipeConfig{Logger: quiet,
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
			mu.Lock()
			kept = append(kept, msg) // the bug
			want = append(want, string(msg))
			mu.Unlock()
		})})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			c, err := net.Dial("udp", srv.LocalAddr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for j := range each {
				fmt.Fprintf(c, "client %d datagram %d", i, j)
				if j%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // let the last batch be read; fewer kept is fine
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dropped := srv.Stats().RecvDropped
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		runtime.GC()
	}
	debug.FreeOSMemory()
	mu.Lock()
	defer mu.Unlock()
	stale := 0
	for i, b := range kept {
		if string(b) != want[i] { // reads every kept slice
			stale++
		}
	}
	record(t, "a callback that keeps every msg slice: 16 clients × 500 datagrams",
		"receive batches pooled on the Go heap (`UDPBatch` 32)",
		"%d kept slices (of %d sent; %d dropped by the kernel) read after Close and GC: %d stale, no crash", len(kept), clients*each, dropped, stale)
}
