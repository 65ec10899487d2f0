package p2pd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// ---- helpers ----

const waitFor = 5 * time.Second

func loopRoute(t testing.TB, f Family) Route {
	t.Helper()
	if f == IPv6 {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			testnet.SkipUnlessCI(t, "no IPv6 loopback: %v", err)
		}
		ln.Close()
	}
	r, err := Route{Family: f}.Bind("localhost", 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// inbox is a MsgCallback that keeps copies of the messages.
type inbox struct{ ch chan Msg }

func newInbox() *inbox { return &inbox{ch: make(chan Msg, 1024)} }

func (b *inbox) MsgCB(msg []byte, from Peer, p *Pipe) {
	b.ch <- Msg{Data: bytes.Clone(msg), From: from, Pipe: p}
}

func (b *inbox) next(t testing.TB) Msg {
	t.Helper()
	select {
	case m := <-b.ch:
		return m
	case <-time.After(waitFor):
		t.Fatal("timed out waiting for a message")
	}
	return Msg{}
}

func (b *inbox) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-b.ch:
		t.Fatalf("unexpected message %q from %v", m.Data, m.From)
	case <-time.After(d):
	}
}

var echoCB = MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) { p.Send(msg, from) })

func listen(t testing.TB, proto Proto, r Route, c *PipeConfig) *Pipe {
	t.Helper()
	p, err := Listen(context.Background(), proto, r, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t testing.TB, proto Proto, to netip.AddrPort, c *PipeConfig) *Pipe {
	t.Helper()
	p, err := Dial(context.Background(), proto, Route{}, to.Addr().String(), to.Port(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func waitDone(t testing.TB, p *Pipe) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(waitFor):
		t.Fatal("pipe did not end")
	}
}

// endRec records OnEnd calls.
type endRec struct {
	mu      sync.Mutex
	ups     map[*Pipe]int
	ends    map[*Pipe]int
	reasons map[*Pipe]error
	ended   chan *Pipe
}

func newEndRec() *endRec {
	return &endRec{ups: map[*Pipe]int{}, ends: map[*Pipe]int{}, reasons: map[*Pipe]error{}, ended: make(chan *Pipe, 100)}
}

func (r *endRec) onUp(p *Pipe) { r.mu.Lock(); r.ups[p]++; r.mu.Unlock() }
func (r *endRec) onEnd(p *Pipe, reason error) {
	r.mu.Lock()
	r.ends[p]++
	r.reasons[p] = reason
	r.mu.Unlock()
	r.ended <- p
}

func (r *endRec) wait(t testing.TB, match func(*Pipe) bool) (*Pipe, error) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case p := <-r.ended:
			if match(p) {
				r.mu.Lock()
				defer r.mu.Unlock()
				return p, r.reasons[p]
			}
		case <-timeout:
			t.Fatal("timed out waiting for OnEnd")
			return nil, nil
		}
	}
}

// ---- tests ----

func TestEchoLoopback(t *testing.T) {
	for _, f := range []Family{IPv4, IPv6} {
		for _, proto := range []Proto{TCP, UDP} {
			t.Run(fmt.Sprintf("%v/%v", f, proto), func(t *testing.T) {
				r := loopRoute(t, f)
				srv := listen(t, proto, r, &PipeConfig{OnMsg: echoCB})
				if srv.LocalAddr().Port() == 0 || srv.Route().Bound != srv.LocalAddr() {
					t.Fatalf("local %v route %v", srv.LocalAddr(), srv.Route())
				}
				if !srv.IsServer() || srv.Proto() != proto || srv.Family() != f || srv.RemoteAddr().IsValid() {
					t.Fatalf("accessors: server=%v proto=%v family=%v remote=%v", srv.IsServer(), srv.Proto(), srv.Family(), srv.RemoteAddr())
				}
				in := newInbox()
				cli, err := Dial(context.Background(), proto, r.Family.routeForTest(), srv.LocalAddr().Addr().String(), srv.LocalAddr().Port(), &PipeConfig{OnMsg: in})
				if err != nil {
					t.Fatal(err)
				}
				defer cli.Close()
				if cli.RemoteAddr() != srv.LocalAddr() || cli.IsServer() || cli.Family() != f {
					t.Fatalf("client remote %v, want %v", cli.RemoteAddr(), srv.LocalAddr())
				}
				if err := cli.Send([]byte("hello"), Peer{}); err != nil {
					t.Fatal(err)
				}
				m := in.next(t)
				if string(m.Data) != "hello" || m.From.AddrPort != srv.LocalAddr() || m.Pipe != cli {
					t.Fatalf("got %q from %v on %p", m.Data, m.From, m.Pipe)
				}
				if err := cli.Send([]byte("x"), Peer{AddrPort: netip.MustParseAddrPort("127.0.0.1:1")}); !errors.Is(err, ErrInvalid) {
					t.Fatalf("send to another address on a client pipe: %v", err)
				}
			})
		}
	}
}

// routeForTest is a helper so that the test above dials through a route
// of the right family with no NIC (the OS picks the source).
func (f Family) routeForTest() Route { return Route{Family: f} }

func TestUDPSendTo(t *testing.T) {
	r := loopRoute(t, IPv4)
	srv := listen(t, UDP, r, nil)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	to := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := srv.Send([]byte("to you"), Peer{AddrPort: to}); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(waitFor))
	buf := make([]byte, 100)
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "to you" || from.Port() != srv.LocalAddr().Port() {
		t.Fatalf("got %q from %v, %v", buf[:n], from, err)
	}
	if err := srv.Send([]byte("x"), Peer{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("UDP server send without destination: %v", err)
	}
}

func TestTCPServerSendByAddr(t *testing.T) {
	srv := listen(t, TCP, loopRoute(t, IPv4), nil)
	in := newInbox()
	cli := dial(t, TCP, srv.LocalAddr(), &PipeConfig{OnMsg: in})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conn, err := srv.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if conn.RemoteAddr() != cli.LocalAddr() || conn.Parent() != srv || len(srv.Clients()) != 1 {
		t.Fatalf("conn remote %v, client local %v, parent %p, clients %d", conn.RemoteAddr(), cli.LocalAddr(), conn.Parent(), len(srv.Clients()))
	}
	if err := srv.Send([]byte("by address"), Peer{AddrPort: cli.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	if m := in.next(t); string(m.Data) != "by address" {
		t.Fatalf("got %q", m.Data)
	}
	other := netip.AddrPortFrom(cli.LocalAddr().Addr(), cli.LocalAddr().Port()+1)
	if err := srv.Send([]byte("x"), Peer{AddrPort: other}); !errors.Is(err, ErrNoClient) {
		t.Fatalf("send to unknown client: %v", err)
	}
	cli.Close()
	waitDone(t, conn)
	if err := srv.Send([]byte("x"), Peer{AddrPort: cli.LocalAddr()}); !errors.Is(err, ErrNoClient) {
		t.Fatalf("send to a client gone: %v", err)
	}
}

func TestAccept(t *testing.T) {
	srv := listen(t, TCP, loopRoute(t, IPv6), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := srv.Accept(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Accept with nobody: %v", err)
	}
	for i := 0; i < 3; i++ {
		cli := dial(t, TCP, srv.LocalAddr(), nil)
		c, err := srv.Accept(context.Background())
		if err != nil || c.RemoteAddr() != cli.LocalAddr() {
			t.Fatalf("accept %d: %v %v", i, c, err)
		}
	}
	u := listen(t, UDP, loopRoute(t, IPv4), nil)
	if _, err := u.Accept(context.Background()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Accept on UDP: %v", err)
	}
	errc := make(chan error, 1)
	go func() { _, err := srv.Accept(context.Background()); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	srv.Close()
	if err := <-errc; !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("pending Accept on Close: %v", err)
	}
}

func TestUpEndOnce(t *testing.T) {
	rec := newEndRec()
	cfg := &PipeConfig{OnUp: rec.onUp, OnEnd: rec.onEnd, OnMsg: echoCB}
	srv, err := Listen(context.Background(), TCP, loopRoute(t, IPv4), cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := newInbox()
	cli, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", srv.LocalAddr().Port(), &PipeConfig{OnUp: rec.onUp, OnEnd: rec.onEnd, OnMsg: in})
	if err != nil {
		t.Fatal(err)
	}
	cli.Send([]byte("hi"), Peer{})
	in.next(t) // the conn is up on both sides
	cli.Close()
	cli.Close() // idempotent
	conn, reason := rec.wait(t, func(p *Pipe) bool { return p.Parent() == srv })
	if !errors.Is(reason, io.EOF) {
		t.Fatalf("server side reason %v, want io.EOF", reason)
	}
	if !errors.Is(conn.Err(), io.EOF) {
		t.Fatalf("Err() = %v", conn.Err())
	}
	srv.Close()
	<-cli.Done() // Close does not wait: OnEnd runs before Done is closed
	<-srv.Done()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.ups[cli] != 1 || rec.ups[conn] != 1 || rec.ups[srv] != 0 {
		t.Fatalf("OnUp counts: client %d conn %d server %d", rec.ups[cli], rec.ups[conn], rec.ups[srv])
	}
	if rec.ends[cli] != 1 || rec.ends[conn] != 1 || rec.ends[srv] != 1 {
		t.Fatalf("OnEnd counts: client %d conn %d server %d", rec.ends[cli], rec.ends[conn], rec.ends[srv])
	}
	if rec.reasons[cli] != nil || rec.reasons[srv] != nil {
		t.Fatalf("local close reasons: client %v server %v", rec.reasons[cli], rec.reasons[srv])
	}
	if err := cli.Send([]byte("x"), Peer{}); !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

func TestPanicConfinedToOneMessage(t *testing.T) {
	var logged atomic.Int32
	h := slog.NewTextHandler(io.Discard, nil)
	logger := slog.New(countHandler{h, &logged})
	cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		if string(msg) == "boom" {
			panic("boom")
		}
		p.Send(msg, from)
	})
	for _, proto := range []Proto{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			srv := listen(t, proto, loopRoute(t, IPv4), &PipeConfig{OnMsg: cb, Logger: logger, Framing: FrameLine})
			in := newInbox()
			cli := dial(t, proto, srv.LocalAddr(), &PipeConfig{OnMsg: in, Framing: FrameLine})
			cli.Send([]byte("boom"), Peer{})
			time.Sleep(20 * time.Millisecond)
			cli.Send([]byte("after"), Peer{})
			if m := in.next(t); string(m.Data) != "after" {
				t.Fatalf("got %q", m.Data)
			}
		})
	}
	if logged.Load() != 2 {
		t.Fatalf("%d panics logged, want 2", logged.Load())
	}
}

type countHandler struct {
	slog.Handler
	n *atomic.Int32
}

func (h countHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func TestPipeSetOnMsg(t *testing.T) {
	reply := func(s string) MsgCallback {
		return MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) { p.Send([]byte(s), from) })
	}
	for _, proto := range []Proto{TCP, UDP} {
		srv := listen(t, proto, loopRoute(t, IPv4), &PipeConfig{OnMsg: reply("A")})
		in := newInbox()
		cli := dial(t, proto, srv.LocalAddr(), &PipeConfig{OnMsg: in})
		cli.Send([]byte("?"), Peer{})
		if m := in.next(t); string(m.Data) != "A" {
			t.Fatalf("%v: got %q", proto, m.Data)
		}
		srv.SetOnMsg(reply("B")) // applies to the existing TCP conn too
		cli.Send([]byte("?"), Peer{})
		if m := in.next(t); string(m.Data) != "B" {
			t.Fatalf("%v: got %q after swap", proto, m.Data)
		}
		srv.SetOnMsg(nil)
		cli.Send([]byte("?"), Peer{})
		in.none(t, 50*time.Millisecond)
	}
}

func TestIdleAndReadTimeout(t *testing.T) {
	rec := newEndRec()
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{IdleTimeout: 100 * time.Millisecond, OnEnd: rec.onEnd, OnMsg: echoCB})
	in := newInbox()
	cli := dial(t, TCP, srv.LocalAddr(), &PipeConfig{OnMsg: in})
	// Activity keeps it open past the timeout.
	for range 3 {
		time.Sleep(60 * time.Millisecond)
		cli.Send([]byte("k"), Peer{})
		in.next(t)
	}
	_, reason := rec.wait(t, func(p *Pipe) bool { return p.Parent() == srv })
	if !errors.Is(reason, ErrIdleTimeout) {
		t.Fatalf("reason %v, want ErrIdleTimeout", reason)
	}
	waitDone(t, cli) // the client sees the close
	if !errors.Is(cli.Err(), io.EOF) {
		t.Fatalf("client reason %v", cli.Err())
	}

	srv2 := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{ReadTimeout: 100 * time.Millisecond, Framing: FrameLength32, OnEnd: rec.onEnd})
	c, err := net.Dial("tcp", srv2.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0, 0, 0, 10, 'a', 'b'}) // 2 of 10 bytes, then silence
	_, reason = rec.wait(t, func(p *Pipe) bool { return p.Parent() == srv2 })
	if !errors.Is(reason, ErrReadTimeout) {
		t.Fatalf("reason %v, want ErrReadTimeout", reason)
	}
}

func TestCloseWhileBusy(t *testing.T) {
	for _, proto := range []Proto{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			srv, err := Listen(context.Background(), proto, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB})
			if err != nil {
				t.Fatal(err)
			}
			sub, _ := srv.Subscribe("", netip.AddrPort{})
			recvErr := make(chan error, 1)
			go func() {
				for {
					if _, err := srv.Recv(context.Background(), sub); err != nil {
						recvErr <- err
						return
					}
				}
			}()
			var wg sync.WaitGroup
			var sent atomic.Int64
			for i := 0; i < 16; i++ {
				cli, err := Dial(context.Background(), proto, Route{}, "127.0.0.1", srv.LocalAddr().Port(), &PipeConfig{OnMsg: MsgCallbackFunc(func([]byte, Peer, *Pipe) {})})
				if err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer cli.Close()
					deadline := time.Now().Add(2 * time.Second)
					for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
						if err := cli.Send([]byte("busy busy busy"), Peer{}); err != nil {
							if proto == UDP && errors.Is(err, syscall.ECONNREFUSED) {
								return // server gone
							}
							return
						}
						sent.Add(1)
						select {
						case <-cli.Done():
							return
						default:
						}
					}
				}()
			}
			time.Sleep(100 * time.Millisecond)
			done := make(chan struct{})
			go func() { srv.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(waitFor):
				t.Fatal("Close deadlocked")
			}
			if err := <-recvErr; !errors.Is(err, ErrPipeClosed) {
				t.Fatalf("pending Recv: %v", err)
			}
			wg.Wait()
			if sent.Load() == 0 {
				t.Fatal("nothing sent")
			}
		})
	}
}

func TestCloseFromCallback(t *testing.T) {
	for _, which := range []string{"self", "parent"} {
		t.Run(which, func(t *testing.T) {
			srv := listen(t, TCP, loopRoute(t, IPv4), nil)
			srv.SetOnMsg(MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
				p.Send(msg, from)
				if which == "self" {
					p.Close()
				} else {
					p.Parent().Close()
				}
				p.Send(msg, from) // after Close: an error, not a hang
			}))
			in := newInbox()
			cli := dial(t, TCP, srv.LocalAddr(), &PipeConfig{OnMsg: in})
			cli.Send([]byte("bye"), Peer{})
			in.next(t)
			waitDone(t, cli)
			if which == "parent" {
				waitDone(t, srv)
			}
		})
	}
}

func TestShutdownLetsCallbackFinish(t *testing.T) {
	var finished atomic.Bool
	started := make(chan struct{})
	srv, err := Listen(context.Background(), TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: MsgCallbackFunc(func([]byte, Peer, *Pipe) {
		close(started)
		time.Sleep(100 * time.Millisecond)
		finished.Store(true)
	})})
	if err != nil {
		t.Fatal(err)
	}
	cli := dial(t, TCP, srv.LocalAddr(), nil)
	cli.Send([]byte("slow"), Peer{})
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("Shutdown returned before the callback finished")
	}
	if _, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", srv.LocalAddr().Port(), &PipeConfig{ConnectTimeout: time.Second}); err == nil {
		t.Fatal("dial after Shutdown succeeded")
	}
}

// fakeListener fails Accept with a temporary error a few times, then
// blocks until closed.
type fakeListener struct {
	calls  atomic.Int32
	fails  int32
	closed chan struct{}
	once   sync.Once
}

func (l *fakeListener) Accept() (net.Conn, error) {
	if l.calls.Add(1) <= l.fails {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	<-l.closed
	return nil, net.ErrClosed
}
func (l *fakeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} }

func TestAcceptBackoff(t *testing.T) {
	l := &fakeListener{fails: 1 << 30, closed: make(chan struct{})}
	p, err := ServeListener(l, &PipeConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // 5+10+20+40+80 ms: about 6 calls
	n := l.calls.Load()
	start := time.Now()
	p.Close() // interrupts the backoff sleep
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Close took %v during backoff", d)
	}
	if n < 2 || n > 12 {
		t.Fatalf("%d Accept calls in 200ms: want a 5ms-doubling backoff", n)
	}
	// After a success the delay starts again from 5 ms, and a permanent
	// error ends the pipe with that reason.
	l2 := &fakeListener{fails: 2, closed: make(chan struct{})}
	p2, _ := ServeListener(l2, &PipeConfig{Logger: quietLogger()})
	time.Sleep(50 * time.Millisecond)
	p2.Close()
	if l2.calls.Load() != 3 {
		t.Fatalf("%d calls", l2.calls.Load())
	}
}

func TestSocketOptions(t *testing.T) {
	var called atomic.Int32
	lc := &net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		called.Add(1)
		return nil
	}}
	cfg := &PipeConfig{ReuseAddr: true, Broadcast: true, ListenConfig: lc, Linger: -1}
	u := listen(t, UDP, loopRoute(t, IPv4), cfg)
	// SO_REUSEADDR lets a second UDP socket bind the same address.
	r, _ := Route{Family: IPv4}.Bind("localhost", u.LocalAddr().Port())
	u2 := listen(t, UDP, r, cfg)
	u2.Close()
	tl := listen(t, TCP, loopRoute(t, IPv4), cfg)
	if called.Load() != 3 {
		t.Fatalf("user Control called %d times", called.Load())
	}
	cli := dial(t, TCP, tl.LocalAddr(), &PipeConfig{Linger: -1, Dialer: &net.Dialer{Control: func(string, string, syscall.RawConn) error { called.Add(1); return nil }}})
	if called.Load() != 4 {
		t.Fatalf("dialer Control not called")
	}
	cli.Close()
}

// levelCounter is a slog.Handler that counts records of level min and up.
type levelCounter struct {
	min slog.Level
	n   *atomic.Int32
}

func (h levelCounter) Enabled(_ context.Context, l slog.Level) bool { return true }
func (h levelCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= h.min {
		h.n.Add(1)
	}
	return nil
}
func (h levelCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h levelCounter) WithGroup(string) slog.Handler      { return h }
