package p2pd_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/p2pd/p2pd"
)

func ExampleDaemon_ListenAll() {
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		p.Send(bytes.ToUpper(msg), from) // echo, louder
	})},
	}
	defer d.Close()

	// A route on the loopback address; an *Interface or a RoutePool works
	// the same way. Port 0 lets the OS choose; Lookup finds the real port.
	lo := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	ps, err := d.ListenAll(context.Background(), []p2pd.Target{lo}, p2pd.Ports{p2pd.Port(0)},
		[]p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("listeners:", len(ps))
	for _, p := range ps {
		port := p.LocalAddr().Port()
		fmt.Println(p.Proto(), p.LocalAddr().Addr(), d.Lookup(p2pd.IPv4, p.Proto(), port, p.LocalAddr().Addr()) == p)
	}

	udp := d.Select(p2pd.IPv4, p2pd.UDP, 0)[0]
	c, err := net.Dial("udp", udp.LocalAddr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Write([]byte("hello"))
	buf := make([]byte, 16)
	n, _ := c.Read(buf)
	fmt.Printf("%s\n", buf[:n])
	// Output:
	// listeners: 2
	// TCP 127.0.0.1 true
	// UDP 127.0.0.1 true
	// HELLO
}

func ExampleDaemon_ListenSpecific() {
	d := new(p2pd.Daemon)
	defer d.Close()
	echo := p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		p.Send(msg, from)
	})

	// Routes used exactly as bound: here the loopback, port 0.
	lo, err := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	// P2PD's listen_specific(targets, msg_cb): the callback of this call.
	ps, err := d.ListenSpecific(context.Background(), []p2pd.Specific{{Route: lo, Proto: p2pd.TCP}}, p2pd.MsgCB(echo))
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := net.Dial("tcp", ps[0].LocalAddr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Write([]byte("ping"))
	buf := make([]byte, 16)
	n, _ := c.Read(buf)
	fmt.Printf("%s from %v\n", buf[:n], ps[0].LocalAddr().Addr())

	// Shutdown lets messages being handled finish; after it the daemon is
	// closed for good.
	fmt.Println(d.Shutdown(context.Background()))
	_, err = d.ListenSpecific(context.Background(), []p2pd.Specific{{Route: lo, Proto: p2pd.TCP}})
	fmt.Println(err)
	// Output:
	// ping from 127.0.0.1
	// <nil>
	// p2pd: listen specific: daemon closed
}
