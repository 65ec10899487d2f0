package p2pd

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestLinkRelayBothWays(t *testing.T) {
	for _, proto := range []Proto{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			cfg := func(cb MsgCallback) *PipeConfig { return &PipeConfig{MsgCB: cb, Framing: FrameLine} }
			// Echo server E counts what it receives.
			var atE atomic.Int64
			e := listen(t, proto, loopRoute(t, IPv4), cfg(MsgCallbackFunc(func(m []byte, from Peer, p *Pipe) {
				atE.Add(1)
				p.Send(m, from)
			})))
			// Relay: downstream pipe d faces the client, upstream pipe u faces E.
			var d *Pipe
			relay := listen(t, proto, loopRoute(t, IPv4), cfg(nil))
			in := newInbox()
			cli := dial(t, proto, relay.LocalAddr(), cfg(in))
			u := dial(t, proto, e.LocalAddr(), cfg(nil))
			if proto == TCP {
				var err error
				if d, err = relay.Accept(context.Background()); err != nil {
					t.Fatal(err)
				}
			} else {
				// A UDP relay answers through a client pipe to the client.
				r, _ := Route{Family: IPv4}.Bind("localhost", 0)
				dd, err := Dial(context.Background(), UDP, r, "127.0.0.1", cli.LocalAddr().Port(), cfg(nil))
				if err != nil {
					t.Fatal(err)
				}
				defer dd.Close()
				d = dd
				if err := relay.AddPipe(u); err != nil { // client -> relay server -> u -> E
					t.Fatal(err)
				}
			}
			if err := d.AddPipe(u); err != nil {
				t.Fatal(err)
			}
			if err := u.AddPipe(d); err != nil {
				t.Fatal(err)
			}
			if proto == UDP {
				// Replies reach the client from d's port, not relay's: the
				// client pipe accepts only its peer, so count at a sub.
				cli.Close()
				cli = nil
			}
			const n = 50
			var got int
			if proto == TCP {
				for i := range n {
					cli.Send(fmt.Appendf(nil, "m%d", i), Peer{})
				}
				for i := range n {
					if m := in.next(t); string(m.Data) != fmt.Sprintf("m%d", i) {
						t.Fatalf("got %q", m.Data)
					}
					got++
				}
			} else {
				// UDP: a plain socket plays the client so it can hear d.
				peer := listen(t, UDP, loopRoute(t, IPv4), cfg(in))
				d.DelPipe(u)
				u.DelPipe(d)
				d.Close()
				dd, err := Dial(context.Background(), UDP, Route{Family: IPv4}, "127.0.0.1", peer.LocalAddr().Port(), cfg(nil))
				if err != nil {
					t.Fatal(err)
				}
				defer dd.Close()
				u.AddPipe(dd)
				for i := range n {
					peer.Send(fmt.Appendf(nil, "m%d", i), Peer{AddrPort: relay.LocalAddr()})
					in.next(t)
					got++
				}
			}
			time.Sleep(100 * time.Millisecond) // a loop would keep going
			if atE.Load() != n || got != n || len(in.ch) != 0 {
				t.Fatalf("echo server saw %d, client got %d (+%d): want %d each", atE.Load(), got, len(in.ch), n)
			}
		})
	}
}

func TestLinkDelAndRefusals(t *testing.T) {
	var atE atomic.Int64
	e := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{MsgCB: MsgCallbackFunc(func([]byte, Peer, *Pipe) { atE.Add(1) })})
	srv := listen(t, TCP, loopRoute(t, IPv4), nil)
	u := dial(t, TCP, e.LocalAddr(), nil)
	if err := srv.AddPipe(u); err != nil { // every conn of srv forwards to u
		t.Fatal(err)
	}
	cli := dial(t, TCP, srv.LocalAddr(), nil)
	cli.Send([]byte("1"), Peer{})
	deadline := time.Now().Add(waitFor)
	for atE.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	srv.DelPipe(u)
	if len(srv.Links()) != 0 {
		t.Fatal("link still there")
	}
	cli.Send([]byte("2"), Peer{})
	time.Sleep(50 * time.Millisecond)
	if atE.Load() != 1 {
		t.Fatalf("echo server got %d messages, want 1 (DelPipe)", atE.Load())
	}
	conn, _ := srv.Accept(context.Background())
	for name, err := range map[string]error{
		"self":      u.AddPipe(u),
		"nil":       u.AddPipe(nil),
		"server":    u.AddPipe(srv),
		"own peer":  conn.AddPipe(cli),
		"peer back": cli.AddPipe(conn),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
