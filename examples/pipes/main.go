// Command pipes runs a TCP and a UDP echo server pipe on loopback, talks
// to each through a client pipe, prints what happens and exits.
package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/p2pd/p2pd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pipes:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	echo := p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		fmt.Printf("  server got %q from %v, echoing\n", msg, from)
		p.Send(msg, from)
	})
	route, err := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	if err != nil {
		return err
	}
	for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
		srv, err := p2pd.Listen(ctx, proto, route, &p2pd.PipeConfig{
			OnMsg: echo,
			OnUp:  func(p *p2pd.Pipe) { fmt.Printf("  %v client %v connected\n", proto, p.RemoteAddr()) },
		})
		if err != nil {
			return err
		}
		fmt.Printf("%v echo server on %v\n", proto, srv.LocalAddr())
		cli, err := p2pd.Dial(ctx, proto, p2pd.Route{}, "127.0.0.1", srv.LocalAddr().Port(), nil)
		if err != nil {
			srv.Close()
			return err
		}
		// Pull instead of push: a catch-all subscription on the client.
		sub, err := cli.Subscribe("", netip.AddrPort{})
		if err != nil {
			return err
		}
		msg := "hello over " + proto.String()
		fmt.Printf("  client %v sends %q\n", cli.LocalAddr(), msg)
		if err := cli.Send([]byte(msg), p2pd.Peer{}); err != nil {
			return err
		}
		m, err := cli.Recv(ctx, sub)
		if err != nil {
			return err
		}
		fmt.Printf("  client got %q back from %v\n", m.Data, m.From)
		cli.Close()
		srv.Close()
	}
	fmt.Println("done")
	return nil
}
