package p2pd

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestUDPClientRefused: a UDP client pipe whose peer's port is closed
// learns it from the ICMP port unreachable, as a connected net.UDPConn
// does: the pipe ends, Err and OnEnd say ECONNREFUSED, and a pending Recv
// returns instead of waiting forever.
func TestUDPClientRefused(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ICMP errors on connected UDP sockets are checked on Linux")
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closed := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close() // nothing listens there now
	rec := newEndRec()
	cli, err := Dial(context.Background(), UDP, Route{}, "127.0.0.1", closed.Port(), &PipeConfig{OnEnd: rec.onEnd, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	sub, err := cli.Subscribe("", netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	recv := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := cli.Recv(ctx, sub)
		recv <- err
	}()
	if err := cli.Send([]byte("anyone there?"), Peer{}); err != nil {
		t.Fatalf("first Send: %v", err)
	}
	select {
	case <-cli.Done():
	case <-time.After(waitFor):
		t.Fatal("the pipe did not end: the port unreachable was not reported")
	}
	if !errors.Is(cli.Err(), syscall.ECONNREFUSED) {
		t.Fatalf("Err() = %v, want ECONNREFUSED", cli.Err())
	}
	if _, reason := rec.wait(t, func(p *Pipe) bool { return p == cli }); !errors.Is(reason, syscall.ECONNREFUSED) {
		t.Fatalf("OnEnd reason %v", reason)
	}
	select {
	case err := <-recv:
		if err == nil {
			t.Fatal("Recv returned no error")
		}
	case <-time.After(waitFor):
		t.Fatal("Recv still waiting")
	}
	if err := cli.Send([]byte("again"), Peer{}); !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("Send after the end: %v", err)
	}
}
