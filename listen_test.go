package p2pd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
)

func TestBindErrorInUse(t *testing.T) {
	for _, proto := range []Proto{TCP, UDP} {
		a := listen(t, proto, loopRoute(t, IPv4), nil)
		r, _ := Route{Family: IPv4}.Bind("localhost", a.LocalAddr().Port())
		_, err := Listen(context.Background(), proto, r, nil)
		var be *BindError
		if !errors.As(err, &be) || !errors.Is(err, ErrAddrInUse) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("%v: %v", proto, err)
		}
		want := fmt.Sprintf("p2pd: bind %v %v: address already in use", proto, r.Bound)
		if err.Error() != want || be.Addr != r.Bound || be.Proto != proto || be.Family != IPv4 {
			t.Fatalf("got %q, want %q (%+v)", err, want, be)
		}
	}
	_, err := Listen(context.Background(), TCP, Route{}, nil)
	var be *BindError
	if !errors.As(err, &be) || !errors.Is(err, ErrNoAddress) {
		t.Fatalf("zero route: %v", err)
	}
}

func TestServePacketConn(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServePacketConn(pc, &PipeConfig{OnMsg: echoCB})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	in := newInbox()
	cli := dial(t, UDP, srv.LocalAddr(), &PipeConfig{OnMsg: in})
	cli.Send([]byte("adopted"), Peer{})
	if m := in.next(t); string(m.Data) != "adopted" {
		t.Fatalf("got %q", m.Data)
	}
	if _, err := ServePacketConn(nil, nil); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
}

func TestListenNilContext(t *testing.T) {
	var nilCtx context.Context
	r := loopRoute(t, IPv4)
	_, err := Listen(nilCtx, UDP, r, nil)
	var be *BindError
	if !errors.As(err, &be) || !errors.Is(err, ErrInvalid) || be.Addr != r.Bound {
		t.Fatalf("%v, want a *BindError wrapping ErrInvalid", err)
	}
	if want := "p2pd: bind UDP 127.0.0.1:0: invalid value: nil context"; err.Error() != want {
		t.Fatalf("%q, want %q", err, want)
	}
}

// TestServeRoute: a socket bound elsewhere gets a route made of its
// address, as Listen's is made of the route it was given.
func TestServeRoute(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ServeListener(l, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want := Route{Family: IPv4, Bound: l.Addr().(*net.TCPAddr).AddrPort()}
	if got := p.Route(); got.Family != want.Family || got.Bound != want.Bound || len(got.NIC) != 0 || p.LocalAddr() != want.Bound || !p.IsServer() {
		t.Fatalf("route %v, local %v; want %v", got, p.LocalAddr(), want)
	}
}
