package p2pd

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// connectN opens n TCP connections to addr and checks each with an echo.
func connectN(t *testing.T, addr netip.AddrPort, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for i := range n {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if got := echoOnce(t, c, "hello"); got != "hello" {
			t.Fatalf("connection %d: echo %q", i, got)
		}
		cs = append(cs, c)
	}
	return cs
}

func echoOnce(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(waitFor))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "write: " + err.Error()
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return "read: " + err.Error()
	}
	return string(buf)
}

// refused checks that a new connection to addr is closed by the server
// without serving a message.
func refused(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		return // refused before accept: fine too
	}
	defer c.Close()
	if got := echoOnce(t, c, "x"); got == "x" {
		t.Fatal("a connection over the limit was served")
	}
}

func TestMaxConnsPerListener(t *testing.T) {
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, MaxConns: 3, Logger: quietLogger()})
	cs := connectN(t, srv.LocalAddr(), 3)
	refused(t, srv.LocalAddr())
	refused(t, srv.LocalAddr())
	s := srv.Stats()
	if s.Conns != 3 || s.Accepted != 3 || s.Rejected != 2 {
		t.Fatalf("stats %+v, want 3 conns, 3 accepted, 2 rejected", s)
	}
	// The first three still work, and a freed slot takes a new one.
	if got := echoOnce(t, cs[0], "still"); got != "still" {
		t.Fatalf("existing connection: %q", got)
	}
	cs[1].Close()
	deadline := time.Now().Add(waitFor)
	for srv.Stats().Conns != 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	connectN(t, srv.LocalAddr(), 1)
}

func TestMaxConnsPerDaemon(t *testing.T) {
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger(), MaxConns: -1}, MaxTotalConns: 4}
	t.Cleanup(func() { d.Close() })
	var ls []*Pipe
	for range 2 {
		l, err := d.AddListener(context.Background(), TCP, loopRoute(t, IPv4))
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	connectN(t, ls[0].LocalAddr(), 3)
	connectN(t, ls[1].LocalAddr(), 1)
	refused(t, ls[0].LocalAddr())
	refused(t, ls[1].LocalAddr())
	s := d.Stats()
	if s.Listeners != 2 || s.Conns != 4 || s.Accepted != 4 || s.Rejected != 2 {
		t.Fatalf("daemon stats %+v, want 2 listeners, 4 conns, 4 accepted, 2 rejected", s)
	}
}

func TestConfigDefaults(t *testing.T) {
	var c PipeConfig
	if c.idleTimeout(true) != DefaultIdleTimeout || c.idleTimeout(false) != 0 {
		t.Errorf("zero IdleTimeout: accepted %v, client %v", c.idleTimeout(true), c.idleTimeout(false))
	}
	if c.readTimeout() != DefaultReadTimeout || c.maxConns() != DefaultMaxConns {
		t.Errorf("zero ReadTimeout %v, MaxConns %d", c.readTimeout(), c.maxConns())
	}
	c = PipeConfig{IdleTimeout: -1, ReadTimeout: -1, MaxConns: -1}
	if c.idleTimeout(true) != 0 || c.readTimeout() != 0 || c.maxConns() != -1 {
		t.Errorf("negative: idle %v, read %v, max %d", c.idleTimeout(true), c.readTimeout(), c.maxConns())
	}
}

// The idle deadline moves only every quarter of IdleTimeout, yet a
// connection that talks more often than IdleTimeout is never closed, and
// one that falls silent is closed after IdleTimeout, not before.
func TestIdleTimeoutExact(t *testing.T) {
	const idle = 300 * time.Millisecond
	ended := make(chan error, 1)
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, IdleTimeout: idle,
		OnEnd: func(p *Pipe, reason error) {
			if !p.IsServer() {
				ended <- reason
			}
		}})
	c, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var quiet time.Time
	for range 8 { // 8 × idle/2: well past idle in all
		if got := echoOnce(t, c, "tick"); got != "tick" {
			t.Fatalf("echo while talking: %q", got)
		}
		quiet = time.Now()
		select {
		case r := <-ended:
			t.Fatalf("closed while talking: %v", r)
		case <-time.After(idle / 2):
		}
	}
	select {
	case r := <-ended:
		if !errors.Is(r, ErrIdleTimeout) {
			t.Fatalf("reason %v, want ErrIdleTimeout", r)
		}
		if q := time.Since(quiet); q < idle*9/10 {
			t.Fatalf("closed after %v of silence, before IdleTimeout %v", q, idle)
		}
	case <-time.After(waitFor):
		t.Fatal("a silent connection was not closed")
	}
}

func TestPanicsCounted(t *testing.T) {
	cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		if string(msg) == "panic" {
			panic("test panic")
		}
		p.Send(msg, from)
	})
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: cb, Framing: FrameLine, Logger: quietLogger()})
	c, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("panic\n"))
	if got := echoOnce(t, c, "after\n"); got != "after\n" {
		t.Fatalf("after a panic: %q", got)
	}
	if n := srv.Stats().Panics; n != 1 {
		t.Errorf("Panics %d, want 1", n)
	}
}
