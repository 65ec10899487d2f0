package p2pd_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/p2pd/p2pd"
)

// ExampleListen runs a TCP and a UDP echo server pipe on loopback and a
// client pipe for each.
func ExampleListen() {
	ctx := context.Background()
	echo := p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		p.Send(msg, from) // answer on the pipe the message came in on
	})
	route, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
		srv, err := p2pd.Listen(ctx, proto, route, &p2pd.PipeConfig{OnMsg: echo})
		if err != nil {
			fmt.Println(err)
			return
		}
		replies := make(chan string, 1)
		cli, err := p2pd.Dial(ctx, proto, p2pd.Route{}, "127.0.0.1", srv.LocalAddr().Port(), &p2pd.PipeConfig{
			OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
				replies <- string(msg) // string() copies: msg is reused after return
			}),
		})
		if err != nil {
			fmt.Println(err)
			srv.Close()
			return
		}
		cli.Send([]byte("hello over "+proto.String()), p2pd.Peer{AddrPort: netip.AddrPort{}})
		select {
		case r := <-replies:
			fmt.Println("echo:", r)
		case <-time.After(5 * time.Second):
			fmt.Println("no reply")
		}
		cli.Close()
		srv.Close()
	}
	// Output:
	// echo: hello over TCP
	// echo: hello over UDP
}

// A client pipe that pulls its messages instead of taking them in a
// callback: Subscribe makes a bounded queue, Recv waits on it.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lo, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	srv, err := p2pd.Listen(ctx, p2pd.TCP, lo, &p2pd.PipeConfig{Framing: p2pd.FrameLine,
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
			p.Send(append([]byte("you said: "), msg...), from)
		})})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	cli, err := p2pd.Dial(ctx, p2pd.TCP, p2pd.Route{}, "127.0.0.1", srv.LocalAddr().Port(), &p2pd.PipeConfig{Framing: p2pd.FrameLine})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	sub, err := cli.Subscribe("", netip.AddrPort{}) // every message, from anyone
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, line := range []string{"one", "two"} {
		cli.Send([]byte(line), p2pd.Peer{}) // FrameLine adds the newline
		m, err := cli.Recv(ctx, sub)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(string(m.Data)) // m.Data is the receiver's to keep
	}
	// Output:
	// you said: one
	// you said: two
}

// Shutdown lets the messages in flight finish, then waits, within its
// context, for everything the daemon ran; Close would stop at once.
func ExampleDaemon_Shutdown() {
	inFlight := make(chan struct{})
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		close(inFlight)
		time.Sleep(100 * time.Millisecond) // a slow answer, in flight at Shutdown
		p.Send(msg, from)
	})}}
	lo, _ := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	ps, err := d.ListenSpecific(context.Background(), []p2pd.Specific{{Route: lo, Proto: p2pd.UDP}})
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := net.Dial("udp", ps[0].LocalAddr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Write([]byte("last words"))
	<-inFlight

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("shutdown:", d.Shutdown(ctx), "listeners left:", d.Len())
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, err := c.Read(buf)
	fmt.Printf("%q %v\n", buf[:n], err)
	// Output:
	// shutdown: <nil> listeners left: 0
	// "last words" <nil>
}
