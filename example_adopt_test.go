//go:build unix

package p2pd_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"

	"github.com/p2pd/p2pd"
)

// A socket bound elsewhere (passed by a service manager, inherited over an
// exec, or, here, opened by the net package) served as a listener of the
// daemon.
func ExampleDaemon_Adopt() {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	f, err := l.(*net.TCPListener).File() // a duplicate of the descriptor
	l.Close()
	if err != nil {
		fmt.Println(err)
		return
	}
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{Framing: p2pd.FrameLine}}
	defer d.Close()
	echo := p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { p.Send(msg, from) })
	ps, err := d.Adopt(context.Background(), []*os.File{f}, p2pd.MsgCB(echo)) // Adopt closes f
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ps[0].Proto(), d.Len(), "listener")

	c, err := net.Dial("tcp", ps[0].LocalAddr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Fprint(c, "hello\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	fmt.Printf("%q %v\n", line, err)
	// Output:
	// TCP 1 listener
	// "hello\n" <nil>
}
