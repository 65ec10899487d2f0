package p2pd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestIntercept: a tap takes the messages it wants before the callback,
// leaves the others, survives its own panic, and goes when removed.
func TestIntercept(t *testing.T) {
	got := make(chan string, 16)
	srv, err := Listen(context.Background(), UDP, loopRoute(t, IPv4), &PipeConfig{Logger: quietLogger(),
		OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) { got <- "cb:" + string(msg) })})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tapped := make(chan string, 16)
	remove, err := srv.Intercept(func(msg []byte, from Peer) bool {
		if bytes.HasPrefix(msg, []byte("panic")) {
			panic("a careless tap")
		}
		if bytes.HasPrefix(msg, []byte("X")) {
			tapped <- string(msg) // a copy: msg is the reader's buffer
			return true
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next := func(ch chan string) string {
		select {
		case s := <-ch:
			return s
		case <-time.After(waitFor):
			t.Fatal("nothing arrived")
			return ""
		}
	}
	for _, m := range []string{"Xstun", "hello", "panic!", "Xagain"} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
		want, ch := "cb:"+m, got
		if m[0] == 'X' {
			want, ch = m, tapped
		}
		if s := next(ch); s != want {
			t.Fatalf("sent %q: got %q, want %q", m, s, want)
		}
	}
	if srv.Stats().Panics != 1 {
		t.Errorf("Panics = %d, want 1", srv.Stats().Panics)
	}
	remove()
	remove() // twice is fine
	c.Write([]byte("Xafter"))
	if s := next(got); s != "cb:Xafter" {
		t.Fatalf("after remove: %q", s)
	}
	select {
	case s := <-tapped:
		t.Fatalf("removed tap saw %q", s)
	default:
	}

	if _, err := srv.Intercept(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Intercept(nil) = %v", err)
	}
	srv.Close()
	<-srv.Done()
	if _, err := srv.Intercept(func([]byte, Peer) bool { return false }); !errors.Is(err, ErrPipeClosed) {
		t.Errorf("Intercept on a closed pipe = %v", err)
	}
}
