package p2pd

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// The batch tests fill a socket's receive queue before the pipe reads it,
// so that its first recvmmsg returns several datagrams: batching is then
// certain, not a matter of timing.

// prefilled returns a bound UDP socket with the given datagrams waiting
// in it, and the client socket that sent them.
func prefilled(t *testing.T, msgs [][]byte) (*net.UDPConn, *net.UDPConn) {
	t.Helper()
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		testnet.SkipUnlessCI(t, "no IPv4 loopback: %v", err)
	}
	cli, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	for _, m := range msgs {
		if _, err := cli.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	return srv, cli
}

func datagrams(n int) [][]byte {
	var ms [][]byte
	for i := range n {
		ms = append(ms, fmt.Appendf(nil, "datagram %03d %s", i, bytes.Repeat([]byte{byte('a' + i%26)}, i)))
	}
	return ms
}

func readN(t *testing.T, c *net.UDPConn, n int) map[string]bool {
	t.Helper()
	got := make(map[string]bool)
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(waitFor))
	for len(got) < n {
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d of %d replies: %v", len(got), n, err)
		}
		got[string(buf[:k])] = true
	}
	return got
}

func TestUDPBatchEcho(t *testing.T) {
	want := datagrams(100)
	srv, cli := prefilled(t, want)
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: echoCB, UDPBatch: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := readN(t, cli, len(want))
	for _, m := range want {
		if !got[string(m)] {
			t.Errorf("no echo of %q", m)
		}
	}
	if p.ub == nil {
		t.Fatal("no batched I/O on Linux")
	}
	// 100 datagrams in batches of 16: at least 6 batches, and the replies
	// of those went out queued.
	if b, q := p.ub.batches.Load(), p.ub.queued.Load(); b < 6 || q < 6*2 {
		t.Errorf("%d batches, %d queued replies: the burst was not batched", b, q)
	}
	if e := p.ub.sendErrs.Load(); e != 0 {
		t.Errorf("%d replies dropped", e)
	}
	// Idle again: the receive batch went back to the pool.
	deadline := time.Now().Add(waitFor)
	for p.ub.holdsBuffers() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p.ub.holdsBuffers() {
		t.Error("an idle pipe still holds its receive buffers")
	}
	// The watchdog ran while batches did; closing the last pipe ends it.
	p.Close()
	dog := p.cfg.dog
	dog.mu.Lock()
	running := dog.running
	dog.mu.Unlock()
	if running {
		t.Error("the batch watchdog still runs after its last pipe closed")
	}
}

func TestUDPBatchOff(t *testing.T) {
	want := datagrams(20)
	srv, cli := prefilled(t, want)
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: echoCB, UDPBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	readN(t, cli, len(want))
	if b := p.ub.batches.Load(); b != 0 {
		t.Errorf("UDPBatch 1 dispatched %d batches", b)
	}
}

// A callback that blocks must not hold the replies that others send on
// the pipe meanwhile: the queue is flushed within maxQueueDelay.
func TestUDPQueuedSendNotHeldByBlockedCallback(t *testing.T) {
	srv, cli := prefilled(t, [][]byte{[]byte("block"), []byte("b"), []byte("c")})
	release := make(chan struct{})
	blocked := make(chan struct{})
	var calls atomic.Int32
	cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		if calls.Add(1) == 1 {
			p.Send([]byte("before blocking"), from) // queued: the batch has 3
			close(blocked)
			<-release
		}
		p.Send(msg, from)
	})
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: cb})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	defer close(release)
	<-blocked
	to := cli.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := p.Send([]byte("from elsewhere"), Peer{AddrPort: to}); err != nil {
		t.Fatal(err)
	}
	got := readN(t, cli, 2)
	if !got["before blocking"] || !got["from elsewhere"] {
		t.Fatalf("while the callback blocks, got %v", got)
	}
	if q := p.ub.queued.Load(); q < 2 {
		t.Errorf("%d Sends queued, want both (the test must exercise the queue)", q)
	}
	release <- struct{}{}
	got = readN(t, cli, 3)
	for _, m := range []string{"block", "b", "c"} {
		if !got[m] {
			t.Errorf("no echo of %q after the callback returned: %v", m, got)
		}
	}
}

// A callback that closes its pipe stops the batch: nothing after it is
// dispatched, and the replies queued before the Close still leave.
func TestUDPBatchCloseFromCallback(t *testing.T) {
	srv, cli := prefilled(t, datagrams(10))
	var calls atomic.Int32
	cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		n := calls.Add(1)
		p.Send(msg, from)
		if n == 3 {
			p.Close()
		}
	})
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: cb})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	if n := calls.Load(); n != 3 {
		t.Errorf("%d callbacks, want 3 (none after Close)", n)
	}
	readN(t, cli, 3)
}

// Replies to IPv6 link-local peers carry the zone; the batch queue sends
// them on the bound interface. Here on ::1 a zone is refused at once by
// the plain path, and the queue must not swallow that error.
func TestUDPQueueRefusesUnsendable(t *testing.T) {
	srv, cli := prefilled(t, datagrams(2))
	errs := make(chan error, 2)
	cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		errs <- p.Send(msg, Peer{AddrPort: netip.MustParseAddrPort("[2001:db8::1]:9")})
		p.Send(msg, from)
	})
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: cb})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	readN(t, cli, 2)
	for range 2 {
		if err := <-errs; err == nil {
			t.Error("an IPv6 destination on an IPv4 socket was accepted (queued) instead of refused")
		}
	}
}

// TestUDPBatchRepliesFromDestination: replies queued during a batch on a
// wildcard socket leave from the address each client sent to (loopback
// 127.0.0.2 and 127.0.0.3; the kernel alone would answer from 127.0.0.1,
// and the clients' connected sockets would drop that).
func TestUDPBatchRepliesFromDestination(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	port := srv.LocalAddr().(*net.UDPAddr).Port
	var clients []*net.UDPConn
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)} {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: ip, Port: port})
		if err != nil {
			srv.Close()
			t.Fatal(err)
		}
		defer c.Close()
		for i := range 10 {
			fmt.Fprintf(c, "%v #%d", ip, i)
		}
		clients = append(clients, c)
	}
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: echoCB})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, c := range clients {
		got := readN(t, c, 10)
		for i := range 10 {
			if want := fmt.Sprintf("%v #%d", c.RemoteAddr().(*net.UDPAddr).IP, i); !got[want] {
				t.Errorf("client of %v: no echo of %q", c.RemoteAddr(), want)
			}
		}
	}
	if q := p.ub.queued.Load(); q < 2 {
		t.Errorf("%d replies queued: the test did not exercise the batch path", q)
	}
}
