package p2pd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Attacks by peers (and careless owners) on a single pipe, each bounded in
// count and time, on loopback only. The daemon-wide ones are in
// peers_attack_linux_test.go.

// TestWriteTimeoutNonReadingPeer: a peer that asks for a large reply and
// never reads loses its connection within WriteTimeout: Send returns an
// error wrapping ErrWriteTimeout, OnEnd gets it, Stats counts it, and a
// Shutdown is not held up.
func TestWriteTimeoutNonReadingPeer(t *testing.T) {
	big := bytes.Repeat([]byte("r"), 1<<20)
	sendErr := make(chan error, 1)
	ends := newEndRec()
	srv, err := Listen(context.Background(), TCP, loopRoute(t, IPv4), &PipeConfig{
		WriteTimeout: 200 * time.Millisecond,
		OnEnd:        ends.onEnd,
		Logger:       quietLogger(),
		OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
			for range 64 { // 64 MiB: far more than the socket buffers take
				if err := p.Send(big, from); err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	c.Write([]byte("give me everything")) // and never read
	select {
	case err := <-sendErr:
		if !errors.Is(err, ErrWriteTimeout) {
			t.Fatalf("Send to a peer that does not read: %v, want ErrWriteTimeout", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Send still blocked: the peer pins the connection")
	}
	conn, reason := ends.wait(t, func(p *Pipe) bool { return !p.IsServer() })
	if !errors.Is(reason, ErrWriteTimeout) {
		t.Fatalf("OnEnd reason %v, want ErrWriteTimeout", reason)
	}
	<-conn.Done() // a connection leaves its server after OnEnd
	if s := srv.Stats(); s.WriteTimeouts != 1 || s.Conns != 0 {
		t.Fatalf("stats %+v, want 1 write timeout and no connection left", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestWriteTimeoutSlowReaderKept: a peer that reads slowly but steadily
// keeps its connection: the timeout is for a peer that takes nothing, not
// for a large message that takes longer than WriteTimeout in all.
func TestWriteTimeoutSlowReaderKept(t *testing.T) {
	msg := bytes.Repeat([]byte("s"), 4<<20)
	sendErr := make(chan error, 1)
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{
		WriteTimeout: 300 * time.Millisecond,
		Logger:       quietLogger(),
		OnMsg: MsgCallbackFunc(func(_ []byte, from Peer, p *Pipe) {
			sendErr <- p.Send(msg, from)
		}),
	})
	c, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("go"))
	// Read 4 MiB at about 2 MiB/s: 2 s in all, never 300 ms without data.
	buf := make([]byte, 64<<10)
	got := 0
	deadline := time.Now().Add(20 * time.Second)
	for got < len(msg) && time.Now().Before(deadline) {
		c.SetReadDeadline(time.Now().Add(waitFor))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		got += n
		time.Sleep(time.Duration(n) * time.Second / (2 << 20))
	}
	if err := <-sendErr; err != nil || got != len(msg) {
		t.Fatalf("slow reader: Send %v, %d of %d bytes", err, got, len(msg))
	}
}

// TestAcceptQueueDropsEnded: a server whose owner never calls Accept holds
// no connection that has ended, however many came and went.
func TestAcceptQueueDropsEnded(t *testing.T) {
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, Logger: quietLogger()})
	for range 300 {
		c, err := net.Dial("tcp", srv.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c, "x")
		c.Close()
	}
	deadline := time.Now().Add(waitFor)
	for srv.Stats().Conns != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	srv.mu.Lock()
	queued := len(srv.acceptQ)
	srv.mu.Unlock()
	if queued != 0 {
		t.Fatalf("%d ended connections kept for an Accept nobody calls", queued)
	}
	// A live connection is still there for Accept.
	c, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	p, err := srv.Accept(ctx)
	if err != nil || p.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("Accept: %v, %v", p, err)
	}
}

// TestEvictSilentForNewcomer: a full server closes the connection silent
// the longest (a FrameRaw trickler) for a new one, and keeps one that
// talks; with no silent connection the newcomer is refused.
func TestEvictSilentForNewcomer(t *testing.T) {
	ends := newEndRec()
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, MaxConns: 2, OnEnd: ends.onEnd, Logger: quietLogger()})
	cs := connectN(t, srv.LocalAddr(), 2) // both talk once
	trickler, talker := cs[0], cs[1]
	// The talker talks every 100 ms; the trickler has sent its one byte.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				echoOnce(t, talker, "t")
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(evictAfter + 200*time.Millisecond)
	// A newcomer gets in; the trickler is closed with ErrEvicted.
	connectN(t, srv.LocalAddr(), 1)
	p, reason := ends.wait(t, func(p *Pipe) bool { return !p.IsServer() })
	if !errors.Is(reason, ErrEvicted) || p.RemoteAddr().String() != trickler.LocalAddr().String() {
		t.Fatalf("ended %v with %v, want the trickler %v with ErrEvicted", p.RemoteAddr(), reason, trickler.LocalAddr())
	}
	if s := srv.Stats(); s.Evicted != 1 || s.Rejected != 0 {
		t.Fatalf("stats %+v, want 1 evicted, none rejected", s)
	}
	// Now both slots talk or have just come: the next newcomer is refused.
	refused(t, srv.LocalAddr())
	if s := srv.Stats(); s.Evicted != 1 || s.Rejected != 1 {
		t.Fatalf("stats %+v, want 1 evicted, 1 rejected", s)
	}
}

// TestTLSHandshakeBoundedByIdle: a TLS peer silent in its handshake is
// closed after IdleTimeout when that is shorter than ConnectTimeout.
func TestTLSHandshakeBoundedByIdle(t *testing.T) {
	cert, _ := selfSigned(t)
	ends := newEndRec()
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{
		OnMsg: echoCB, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, OnEnd: ends.onEnd, Logger: quietLogger(),
		IdleTimeout: 200 * time.Millisecond, ConnectTimeout: time.Hour,
	})
	c, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // silent: no ClientHello
	_, reason := ends.wait(t, func(p *Pipe) bool { return !p.IsServer() })
	if !errors.Is(reason, context.DeadlineExceeded) {
		t.Fatalf("reason %v, want the handshake's deadline", reason)
	}
}

// TestUnhandledCountedAndLoggedOnce: messages to a pipe that nothing takes
// are counted, and logged once.
func TestUnhandledCountedAndLoggedOnce(t *testing.T) {
	var logged atomic.Int32
	h := msgCountHandler{Handler: slog.NewTextHandler(nilWriter{}, nil), n: &logged, word: "no MsgCB"}
	srv := listen(t, UDP, loopRoute(t, IPv4), &PipeConfig{Logger: slog.New(h)})
	c, err := net.Dial("udp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 10 {
		c.Write([]byte("lost"))
	}
	deadline := time.Now().Add(waitFor)
	for srv.Stats().Unhandled < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := srv.Stats(); s.Unhandled != 10 || logged.Load() != 1 {
		t.Fatalf("%d unhandled, %d logged; want 10 and 1", s.Unhandled, logged.Load())
	}
}

type nilWriter struct{}

func (nilWriter) Write(b []byte) (int, error) { return len(b), nil }

type msgCountHandler struct {
	slog.Handler
	n    *atomic.Int32
	word string
}

func (h msgCountHandler) Handle(ctx context.Context, r slog.Record) error {
	if bytes.Contains([]byte(r.Message), []byte(h.word)) {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h msgCountHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return msgCountHandler{h.Handler.WithAttrs(as), h.n, h.word}
}

// TestConcurrentCallsClaimKey: two calls in progress never both bind one
// key, even where the system would let them (UDP with ReuseAddr), and
// nothing is left bound after Close.
func TestConcurrentCallsClaimKey(t *testing.T) {
	probe, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(probe.LocalAddr().(*net.UDPAddr).Port)
	probe.Close()
	r := loopRoute(t, IPv4)
	r.Bound = netip.AddrPortFrom(r.Bound.Addr(), port)
	for i := range 30 {
		// A slow bind (a Control hook that takes its time) makes both
		// calls be binding at once.
		slow := &net.ListenConfig{Control: func(string, string, syscall.RawConn) error {
			time.Sleep(10 * time.Millisecond)
			return nil
		}}
		d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger(), ReuseAddr: true, ListenConfig: slow}}
		var wg sync.WaitGroup
		var ok atomic.Int32
		for range 2 {
			wg.Go(func() {
				if _, err := d.ListenSpecific(context.Background(), []Specific{{Route: r, Proto: UDP}}); err == nil {
					ok.Add(1)
				} else if !errors.Is(err, ErrAddrInUse) {
					t.Errorf("round %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		d.Close()
		if err := d.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		if ok.Load() != 1 {
			t.Fatalf("round %d: %d calls bound %v", i, ok.Load(), r.Bound)
		}
		// Nothing left: a socket without SO_REUSEADDR binds the port.
		pc, err := net.ListenPacket("udp4", r.Bound.String())
		if err != nil {
			t.Fatalf("round %d: port still bound after Close: %v", i, err)
		}
		pc.Close()
	}
}
