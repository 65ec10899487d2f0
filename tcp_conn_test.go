package p2pd

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Close of a connection, or of its server, from another goroutine while
// the connection's callback runs returns without waiting for the
// callback, and the peer sees the end at once; the pipe ends when the
// callback returns. (A read path that delivers messages while holding the
// descriptor's read lock, tried for one read per request, must keep this.)
func TestCloseWhileCallbackRuns(t *testing.T) {
	for _, which := range []string{"conn", "server"} {
		t.Run(which, func(t *testing.T) {
			entered := make(chan *Pipe, 1)
			release := make(chan struct{})
			srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{Logger: quietLogger(),
				OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
					if string(msg) == "block" {
						entered <- p
						<-release
						return
					}
					p.Send(msg, from)
				})})
			c, err := net.Dial("tcp4", srv.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitFor))
			// An echo first: the connection has talked, its reader waits.
			buf := make([]byte, 16)
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:4]); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("block")); err != nil {
				t.Fatal(err)
			}
			var p *Pipe
			select {
			case p = <-entered:
			case <-time.After(waitFor):
				t.Fatal("the callback did not run")
			}
			defer close(release)
			closed := make(chan struct{})
			go func() {
				if which == "conn" {
					p.Close()
				} else {
					srv.Close()
				}
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(waitFor):
				t.Fatal("Close waits for the running callback")
			}
			if n, err := c.Read(buf); err == nil {
				t.Fatalf("read %q after Close, want the end of the connection", buf[:n])
			} else if isTimeout(err) {
				t.Fatal("the peer does not see the Close while the callback runs")
			}
			if err := p.Send([]byte("late"), Peer{}); !errors.Is(err, ErrPipeClosed) {
				t.Fatalf("Send after Close: %v, want ErrPipeClosed", err)
			}
			select {
			case <-p.Done():
				t.Fatal("the pipe ended before its callback returned")
			default:
			}
			release <- struct{}{}
			waitDone(t, p)
		})
	}
}
