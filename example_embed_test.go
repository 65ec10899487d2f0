package p2pd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/p2pd/p2pd"
)

// Echo is P2PD's "subclass Daemon and define msg_cb" in Go: a type that
// embeds a Daemon and defines MsgCB.
type Echo struct {
	p2pd.Daemon
	prefix string
}

func (e *Echo) MsgCB(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
	p.Send(append([]byte(e.prefix), msg...), from)
}

func ExampleDaemon_embed() {
	e := &Echo{prefix: "echo: "}
	e.OnMsg = e // the type is its own callback
	defer e.Close()

	lo := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	ps, err := e.ListenAll(context.Background(), []p2pd.Target{lo}, p2pd.Ports{p2pd.Port(0)}, []p2pd.Proto{p2pd.UDP}, p2pd.IPv4)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(exchange("udp", ps[0].LocalAddr(), "hi"))
	// Output:
	// echo: hi
}

// Each call may carry its own callback and error_on_af, as P2PD's
// listen_all(targets, ports, protos, af, msg_cb, error_on_af) does.
func ExampleMsgCB() {
	d := new(p2pd.Daemon)
	defer d.Close()
	ctx := context.Background()
	lo := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	any := p2pd.Ports{p2pd.Port(0)}
	udp := []p2pd.Proto{p2pd.UDP}

	upper := p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { p.Send(bytes.ToUpper(msg), from) })
	lower := p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { p.Send(bytes.ToLower(msg), from) })
	a, err := d.ListenAll(ctx, []p2pd.Target{lo}, any, udp, p2pd.IPv4, p2pd.MsgCB(upper))
	if err != nil {
		fmt.Println(err)
		return
	}
	b, err := d.ListenAll(ctx, []p2pd.Target{lo}, any, udp, p2pd.IPv4, p2pd.MsgCB(lower))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(exchange("udp", a[0].LocalAddr(), "Hello"))
	fmt.Println(exchange("udp", b[0].LocalAddr(), "Hello"))

	// error_on_af: asked for IPv4, a target that serves only IPv6 is
	// skipped, or makes the call fail (binding nothing).
	lo6 := p2pd.Route{Family: p2pd.IPv6, NIC: []netip.Addr{netip.MustParseAddr("::1")}}
	ps, err := d.ListenAll(ctx, []p2pd.Target{lo, lo6}, any, udp, p2pd.IPv4)
	fmt.Println(len(ps), err)
	_, err = d.ListenAll(ctx, []p2pd.Target{lo, lo6}, any, udp, p2pd.IPv4, p2pd.ErrorOnAF(true))
	fmt.Println(errors.Is(err, p2pd.ErrFamilyUnsupported), d.Len())
	// Output:
	// HELLO
	// hello
	// 1 <nil>
	// true 3
}

// exchange sends msg to addr and returns the reply.
func exchange(network string, addr netip.AddrPort, msg string) string {
	c, err := net.Dial(network, addr.String())
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	c.Write([]byte(msg))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err.Error()
	}
	return string(buf[:n])
}
