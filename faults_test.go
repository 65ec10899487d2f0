package p2pd

// Faults inside the callback: a panic costs one message, a callback that
// blocks stalls only its own TCP connection or UDP socket, and the daemon
// still stops (Close waits for the blocked callback once it is released;
// Shutdown with a short context gives up without hanging).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fltBlocked is a daemon on 127.0.0.1 with a TCP listener and two UDP
// listeners whose callback echoes, panics on messages starting with
// "panic" and blocks on messages starting with "block" until release.
type fltBlocked struct {
	d           *Daemon
	tcp         netip.AddrPort
	udp1, udp2  netip.AddrPort
	started     chan string // the message of every blocking callback that began
	finished    atomic.Int32
	panics      atomic.Int32
	releaseOnce sync.Once
	releaseCh   chan struct{}
}

func (b *fltBlocked) release() { b.releaseOnce.Do(func() { close(b.releaseCh) }) }

func fltNewBlocked(t *testing.T) *fltBlocked {
	t.Helper()
	b := &fltBlocked{started: make(chan string, 16), releaseCh: make(chan struct{})}
	logger := slog.New(countHandler{slog.NewTextHandler(io.Discard, nil), &b.panics})
	b.d = &Daemon{PipeConfig: PipeConfig{Logger: logger, OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		switch {
		case bytes.HasPrefix(msg, []byte("block")):
			m := string(msg)
			b.started <- m
			<-b.releaseCh
			b.finished.Add(1)
			p.Send([]byte("released:"+m), from)
		case bytes.HasPrefix(msg, []byte("panic")):
			panic("test panic: " + string(msg))
		default:
			p.Send(bytes.Clone(msg), from)
		}
	})}}
	t.Cleanup(func() { b.d.Close() })
	t.Cleanup(b.release) // runs first: Close then waits for the callbacks
	lo, _ := Route{Family: IPv4}.Bind("localhost", 0)
	ps, err := b.d.ListenSpecific(context.Background(), []Specific{{Route: lo, Proto: TCP}, {Route: lo, Proto: UDP}, {Route: lo, Proto: UDP}})
	if err != nil {
		t.Fatal(err)
	}
	b.tcp, b.udp1, b.udp2 = ps[0].LocalAddr(), ps[1].LocalAddr(), ps[2].LocalAddr()
	return b
}

// waitStarted waits for the blocking callback of msg to begin.
func (b *fltBlocked) waitStarted(t *testing.T, msg string) {
	t.Helper()
	select {
	case m := <-b.started:
		if m != msg {
			t.Fatalf("blocked on %q, want %q", m, msg)
		}
	case <-time.After(waitFor):
		t.Fatalf("callback for %q did not start", msg)
	}
}

// waitPanics waits until n panics have been logged.
func (b *fltBlocked) waitPanics(t *testing.T, n int32) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for b.panics.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d panics logged, want %d", b.panics.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func fltDial(t *testing.T, network string, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(network, to.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg on c and waits (2 s at most) for the same bytes.
func fltExchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	t0 := time.Now()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("echo of %q on %v: %q, %v (after %v)", msg, c.LocalAddr(), buf[:n], err, time.Since(t0))
	}
}

func fltSend(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
}

// block makes a TCP connection's callback and a UDP socket's callback
// block: connection a on the TCP listener, and the first UDP listener.
func (b *fltBlocked) block(t *testing.T) (a, u net.Conn) {
	t.Helper()
	a = fltDial(t, "tcp4", b.tcp)
	fltSend(t, a, "block-tcp")
	b.waitStarted(t, "block-tcp")
	u = fltDial(t, "udp4", b.udp1)
	fltSend(t, u, "block-udp")
	b.waitStarted(t, "block-udp")
	return a, u
}

// TestCallbackFaultIsolation: a panic costs one message (TCP and UDP); a
// callback blocked on one TCP connection stalls neither the listener's
// other connections, nor new ones, nor the UDP listeners; a callback
// blocked on a UDP listener stalls neither the TCP listener nor the other
// UDP listener. Then Close returns at once, without waiting for the
// blocked callbacks, and a Shutdown returns once they are released, after
// they have finished.
func TestCallbackFaultIsolation(t *testing.T) {
	b := fltNewBlocked(t)

	// A TCP connection whose callback blocks.
	a := fltDial(t, "tcp4", b.tcp)
	fltSend(t, a, "block-tcp")
	b.waitStarted(t, "block-tcp")

	// Another connection of the same listener: echo, a panic, echo.
	c := fltDial(t, "tcp4", b.tcp)
	fltExchange(t, c, "c1")
	fltSend(t, c, "panic-tcp")
	b.waitPanics(t, 1) // so that "c2" is not read together with "panic-tcp"
	fltExchange(t, c, "c2")

	// The UDP listeners: echo, a panic, echo.
	u1 := fltDial(t, "udp4", b.udp1)
	fltExchange(t, u1, "u1")
	fltSend(t, u1, "panic-udp")
	b.waitPanics(t, 2)
	fltExchange(t, u1, "u2")
	u2 := fltDial(t, "udp4", b.udp2)
	fltExchange(t, u2, "v1")

	// Now the first UDP listener's callback blocks too.
	fltSend(t, u1, "block-udp")
	b.waitStarted(t, "block-udp")
	fltExchange(t, c, "c3")                         // an open TCP connection
	fltExchange(t, fltDial(t, "tcp4", b.tcp), "n1") // a new TCP connection
	fltExchange(t, u2, "v2")                        // the other UDP listener
	// Many exchanges in a row, to show nothing slows down.
	t0 := time.Now()
	for i := range 50 {
		fltExchange(t, c, fmt.Sprintf("c-%d", i))
		fltExchange(t, u2, fmt.Sprintf("v-%d", i))
	}
	t.Logf("100 exchanges with two callbacks blocked: %v", time.Since(t0))

	// The blocked ones are still blocked, and got nothing back.
	if n := b.finished.Load(); n != 0 {
		t.Fatalf("%d blocked callbacks finished before release", n)
	}
	// Close returns at once; Shutdown returns once the callbacks are
	// released, after they finished.
	if err := b.d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := b.finished.Load(); n != 0 {
		t.Fatalf("%d blocked callbacks finished before release", n)
	}
	const delay = 200 * time.Millisecond
	go func() {
		time.Sleep(delay)
		b.release()
	}()
	t0 = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), delay+waitFor)
	defer cancel()
	if err := b.d.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after Close: %v", err)
	}
	el := time.Since(t0)
	if n := b.finished.Load(); n != 2 {
		t.Fatalf("Shutdown returned with %d of 2 blocked callbacks finished", n)
	}
	if el < delay/2 {
		t.Fatalf("Shutdown returned after %v, before the callbacks were released (%v)", el, delay)
	}
	t.Logf("Shutdown returned %v after it was called (callbacks released after %v)", el, delay)
	// The blocked TCP connection was closed by Close.
	a.SetReadDeadline(time.Now().Add(2 * time.Second))
	if buf, err := io.ReadAll(a); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocked connection still open after Close (read %q)", buf)
	}
	if b.d.Len() != 0 {
		t.Fatalf("Len %d after Close", b.d.Len())
	}
}

// TestShutdownWithBlockedCallback: Shutdown with a short context returns
// the context's error on time although callbacks (TCP and UDP) are
// blocked, the listeners are closed at once, and a second Shutdown
// returns once the callbacks are released.
func TestShutdownWithBlockedCallback(t *testing.T) {
	b := fltNewBlocked(t)
	b.block(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- b.d.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Shutdown hangs with a blocked callback")
	}
	t.Logf("Shutdown returned after %v (context: 100ms)", time.Since(t0))
	if c, err := net.DialTimeout("tcp4", b.tcp.String(), time.Second); err == nil {
		c.Close()
		t.Error("TCP listener still accepts after a timed-out Shutdown")
	}
	if b.d.Len() != 0 {
		t.Errorf("Len %d after Shutdown", b.d.Len())
	}
	if n := b.finished.Load(); n != 0 {
		t.Fatalf("%d callbacks finished before release", n)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		b.release()
	}()
	ctx2, cancel2 := context.WithTimeout(context.Background(), waitFor)
	defer cancel2()
	if err := b.d.Shutdown(ctx2); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if n := b.finished.Load(); n != 2 {
		t.Fatalf("second Shutdown returned with %d of 2 callbacks finished", n)
	}
}
