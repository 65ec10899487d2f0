package p2pd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A peer's last message and its FIN, both waiting when the server reads:
// the read that takes the message leaves the FIN behind, with no new
// readiness to come. The server still sees the end at once, not at its
// next read deadline (parkAfter), and closes: the peer gets its echo and
// then the end. (Waiting for readiness after a short read, without a read
// that ends in EAGAIN, missed it.)
func TestLastMessageAndFIN(t *testing.T) {
	hold, release := make(chan struct{}), make(chan struct{})
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{Logger: quietLogger(),
		OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
			if bytes.Equal(msg, []byte("hold")) {
				close(hold)
				<-release
				return
			}
			p.Send(msg, from)
		})})
	c := dialHeld(t, srv, "hold", hold)
	c.Write([]byte("last"))
	c.(*net.TCPConn).CloseWrite()
	waitTaken(t, c)
	start := time.Now()
	close(release)
	c.SetReadDeadline(time.Now().Add(waitFor))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last" {
		t.Fatalf("read %q, %v; want the echo, then the end", got, err)
	}
	// Not a speed target: the end comes at once or at the deadline, 2 s on.
	if took := time.Since(start); took >= parkAfter/2 {
		t.Fatalf("the end came %v after the FIN was there (the read deadline is %v)", took, parkAfter)
	}
}

// Urgent data (MSG_OOB) stops a TCP read short with more bytes behind it,
// and no new readiness comes for those. The connection still reads them,
// and is not closed as idle with them waiting. (Waiting for readiness
// after a short read, without a read that ends in EAGAIN, stalled here.)
func TestUrgentDataDoesNotStall(t *testing.T) {
	const idle = 400 * time.Millisecond
	var mu sync.Mutex
	var got []byte
	hold, release := make(chan struct{}), make(chan struct{})
	ended := make(chan error, 1)
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{Logger: quietLogger(), IdleTimeout: idle,
		OnEnd: func(p *Pipe, reason error) {
			if !p.IsServer() {
				ended <- reason
			}
		},
		OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
			mu.Lock()
			got = append(got, msg...)
			mu.Unlock()
			switch {
			case bytes.Equal(msg, []byte("hold")):
				close(hold)
				<-release
			case bytes.HasPrefix(msg, []byte("abc")):
				// Long enough that the read deadline is moved after
				// this message: it then fires a whole IdleTimeout after
				// it, with "def" still waiting if the read stalled.
				time.Sleep(idle / 2)
			}
		})})
	c := dialHeld(t, srv, "hold", hold)
	// While the server's callback holds its reader: "abc", an urgent
	// byte, "def", all queued at the server before it reads again.
	c.Write([]byte("abc"))
	sc, _ := c.(*net.TCPConn).SyscallConn()
	var serr error
	sc.Control(func(fd uintptr) { serr = syscall.Sendto(int(fd), []byte("!"), syscall.MSG_OOB, nil) })
	if serr != nil {
		t.Fatal(serr)
	}
	c.Write([]byte("def"))
	waitTaken(t, c)
	close(release)

	want := []byte("holdabcdef")
	for deadline := time.Now().Add(waitFor); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		have := append([]byte(nil), got...)
		mu.Unlock()
		if bytes.Equal(have, want) {
			break
		}
		select {
		case reason := <-ended:
			t.Fatalf("the connection ended (%v) having received %q, want %q", reason, have, want)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %q, want %q", have, want)
		}
	}
	// Then, silent, it does end as idle.
	select {
	case reason := <-ended:
		if !errors.Is(reason, ErrIdleTimeout) {
			t.Fatalf("ended with %v, want ErrIdleTimeout", reason)
		}
	case <-time.After(waitFor):
		t.Fatal("the silent connection did not end")
	}
}

// waitTaken waits until the peer's kernel has acknowledged all c sent.
func waitTaken(t *testing.T, c net.Conn) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); queued(t, c, true) > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server's kernel did not take the bytes")
		}
	}
}

// dialHeld connects to srv, sends msg, and waits until srv's callback,
// given msg, has closed hold (it then blocks its connection's reader).
func dialHeld(t *testing.T, srv *Pipe, msg string, hold <-chan struct{}) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hold:
	case <-time.After(waitFor):
		t.Fatal("the callback did not run")
	}
	return c
}
