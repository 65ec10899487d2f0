package p2pd_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/p2pd/p2pd"
)

// A protocol sharing a UDP listener's socket takes its own messages before
// the callback sees them; the callback gets the rest.
func ExamplePipe_Intercept() {
	got := make(chan string, 2)
	lo := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	p, err := p2pd.Listen(context.Background(), p2pd.UDP, lo, &p2pd.PipeConfig{
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { got <- "callback: " + string(msg) }),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	remove, err := p.Intercept(func(msg []byte, from p2pd.Peer) bool {
		if !bytes.HasPrefix(msg, []byte("ctl ")) {
			return false // not ours: on to the callback
		}
		got <- "intercepted: " + string(msg) // msg is valid only until we return: copied
		return true
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer remove()

	c, err := net.Dial("udp", p.LocalAddr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	for _, m := range []string{"ctl ping", "hello"} {
		c.Write([]byte(m))
		select {
		case s := <-got:
			fmt.Println(s)
		case <-time.After(5 * time.Second):
			fmt.Println("nothing arrived")
		}
	}
	// Output:
	// intercepted: ctl ping
	// callback: hello
}
