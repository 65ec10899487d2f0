package p2pd_test

import (
	"context"
	"fmt"
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
