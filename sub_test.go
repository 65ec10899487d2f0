package p2pd

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// udpFrom returns a UDP client pipe bound to 127.0.0.1:port (0: any).
func udpFrom(t *testing.T, port uint16, to netip.AddrPort) *Pipe {
	t.Helper()
	r, _ := Route{Family: IPv4}.Bind("localhost", port)
	p, err := Dial(context.Background(), UDP, r, to.Addr().String(), to.Port(), nil)
	if err != nil {
		testnet.SkipUnlessCI(t, "cannot bind 127.0.0.1:%d: %v", port, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func recvT(t *testing.T, p *Pipe, s *Sub) Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	m, err := p.Recv(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSubscribeFilters(t *testing.T) {
	in := newInbox()
	srv := listen(t, UDP, loopRoute(t, IPv4), &PipeConfig{OnMsg: in})
	a := udpFrom(t, 4209, srv.LocalAddr())
	b := udpFrom(t, 42090, srv.LocalAddr())

	exact, _ := srv.Subscribe("", netip.MustParseAddrPort("127.0.0.1:4209"))
	anyPort, _ := srv.Subscribe("", netip.MustParseAddrPort("127.0.0.1:0"))
	pings, _ := srv.Subscribe("^ping", netip.AddrPort{})
	all, _ := srv.Subscribe("", netip.AddrPort{})
	other, _ := srv.Subscribe("", netip.MustParseAddrPort("127.0.0.2:0"))

	a.Send([]byte("ping from a"), Peer{})
	in.next(t)
	b.Send([]byte("pong from b"), Peer{})
	in.next(t)
	b.Send([]byte("ping from b"), Peer{})
	in.next(t)

	want := map[*Sub][]string{
		exact:   {"ping from a"}, // port 42090 must not match a filter for 4209
		anyPort: {"ping from a", "pong from b", "ping from b"},
		pings:   {"ping from a", "ping from b"},
		all:     {"ping from a", "pong from b", "ping from b"},
		other:   nil,
	}
	for s, msgs := range want {
		if s.Len() != len(msgs) {
			t.Errorf("subscription %+v has %d messages, want %d", s.from, s.Len(), len(msgs))
			continue
		}
		for _, w := range msgs {
			if m := recvT(t, srv, s); string(m.Data) != w || m.Pipe != srv {
				t.Errorf("got %q, want %q", m.Data, w)
			}
		}
	}
	if _, err := srv.Subscribe("(", netip.AddrPort{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad pattern: %v", err)
	}
}

func TestSubscribeFullQueueDrops(t *testing.T) {
	in := newInbox()
	srv := listen(t, UDP, loopRoute(t, IPv4), &PipeConfig{OnMsg: in, QueueSize: 2})
	s, _ := srv.Subscribe("", netip.AddrPort{})
	cli := dial(t, UDP, srv.LocalAddr(), nil)
	for i := range 5 {
		cli.Send([]byte{byte('0' + i)}, Peer{})
		in.next(t) // delivered in order, one at a time
	}
	if s.Len() != 2 || s.Dropped() != 3 {
		t.Fatalf("len %d dropped %d, want 2 and 3", s.Len(), s.Dropped())
	}
	for _, w := range []string{"0", "1"} { // the oldest are kept, new ones dropped
		if m := recvT(t, srv, s); string(m.Data) != w {
			t.Fatalf("got %q want %q", m.Data, w)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := srv.Recv(ctx, s); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("empty queue: %v", err)
	}
}

func TestSubscribeTCPServerAndData(t *testing.T) {
	srv := listen(t, TCP, loopRoute(t, IPv6), &PipeConfig{Framing: FrameLine})
	s, _ := srv.Subscribe("", netip.AddrPort{})
	cli := dial(t, TCP, srv.LocalAddr(), &PipeConfig{Framing: FrameLine})
	cli.Send([]byte("one"), Peer{})
	cli.Send([]byte("two"), Peer{})
	m1 := recvT(t, srv, s)
	m2 := recvT(t, srv, s)
	if string(m1.Data) != "one" || string(m2.Data) != "two" || m1.From.AddrPort != cli.LocalAddr() || m1.Pipe.Parent() != srv {
		t.Fatalf("got %q %q from %v", m1.Data, m2.Data, m1.From)
	}
	// The receiver owns Data: later reads do not change it.
	m1.Pipe.Send([]byte("reply"), Peer{})
	cs, _ := m1.Pipe.Subscribe("", netip.AddrPort{})
	cli.Send([]byte("xxx"), Peer{})
	if m := recvT(t, m1.Pipe, cs); string(m.Data) != "xxx" || string(m1.Data) != "one" {
		t.Fatalf("conn subscription got %q; first message now %q", m.Data, m1.Data)
	}
}

func TestRecvEnds(t *testing.T) {
	srv := listen(t, UDP, loopRoute(t, IPv4), nil)
	s, _ := srv.Subscribe("", netip.AddrPort{})
	other := listen(t, UDP, loopRoute(t, IPv4), nil)
	if _, err := other.Recv(context.Background(), s); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Recv on another pipe's sub: %v", err)
	}
	s2, _ := srv.Subscribe("", netip.AddrPort{})
	errc := make(chan error, 2)
	go func() { _, err := srv.Recv(context.Background(), s2); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	srv.Unsubscribe(s2)
	if err := <-errc; !errors.Is(err, ErrInvalid) {
		t.Fatalf("Recv after Unsubscribe: %v", err)
	}
	go func() { _, err := srv.Recv(context.Background(), s); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	srv.Close()
	if err := <-errc; !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("pending Recv on Close: %v", err)
	}
	if _, err := srv.Subscribe("", netip.AddrPort{}); !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}
