package p2pd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// TestWildcardDelayedRepliesUnderFlood: a UDP server on the wildcard keeps
// the Peer of each request and answers from another goroutine after
// 10,000 other sources have written to it. Every reply still leaves from
// the address its client wrote to (127.0.0.5, not the 127.0.0.1 the flood
// used): the clients' connected sockets drop anything else. In a fresh
// namespace, so the wildcard socket sees only the test's traffic.
func TestWildcardDelayedRepliesUnderFlood(t *testing.T) {
	const clients, flood = 100, 10000
	n := testnet.New(t)
	a := n.AddHost("a")

	var mu sync.Mutex
	var waiting []Peer
	var flooded atomic.Int64
	d := &Daemon{PipeConfig: PipeConfig{Logger: quietLogger(), OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		if strings.HasPrefix(string(msg), "delayed:") {
			mu.Lock()
			waiting = append(waiting, from) // answered later, from another goroutine
			mu.Unlock()
			return
		}
		flooded.Add(1)
	})}}
	defer d.Close()
	var srv []*Pipe
	var err error
	a.Do(t, func() {
		srv, err = d.ListenSpecific(context.Background(), []Specific{
			{Proto: UDP, Route: Route{Family: IPv4, Bound: netip.MustParseAddrPort("0.0.0.0:7400")}},
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	// The clients: connected sockets, to 127.0.0.5.
	cs := make([]*net.UDPConn, clients)
	a.Do(t, func() {
		for i := range cs {
			if cs[i], err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.5:7400"))); err != nil {
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for i, c := range cs {
		fmt.Fprintf(c, "delayed:%d", i)
	}
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(waiting) == clients }, "requests received")

	// The flood: 10,000 sources (ports of 127.0.0.2-.201) to 127.0.0.1.
	a.Do(t, func() {
		to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:7400"))
		for i := range flood {
			src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%200))}
			c, err := net.DialUDP("udp4", src, to)
			if err != nil {
				t.Error(err)
				return
			}
			c.Write([]byte("flood"))
			c.Close()
			if i%500 == 499 { // let the server keep up: a drop would only weaken the test
				waitUntil(t, func() bool { return flooded.Load() >= int64(i+1)-int64(srv[0].Stats().RecvDropped) }, "flood read")
			}
		}
	})
	waitUntil(t, func() bool { return flooded.Load()+int64(srv[0].Stats().RecvDropped) >= flood }, "flood read")
	t.Logf("flood: %d datagrams handled, %d dropped by the kernel", flooded.Load(), srv[0].Stats().RecvDropped)

	// The replies, from this goroutine, long after the callbacks returned.
	mu.Lock()
	peers := append([]Peer(nil), waiting...)
	mu.Unlock()
	for _, peer := range peers {
		if err := srv[0].Send([]byte("reply:"+peer.String()), peer); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	buf := make([]byte, 64)
	deadline := time.Now().Add(2 * time.Second)
	for i, c := range cs {
		c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err != nil {
			t.Errorf("client %d (%v): no reply from 127.0.0.5: %v", i, c.LocalAddr(), err)
			continue
		}
		if want := "reply:" + c.LocalAddr().String(); string(buf[:n]) != want {
			t.Errorf("client %d: %q, want %q", i, buf[:n], want)
			continue
		}
		got++
	}
	t.Logf("%d of %d delayed replies left from the address written to", got, clients)
}

// TestShutdownUDPBatch: Shutdown of a UDP pipe whose batch holds many
// datagrams lets the callback in flight finish, hands the rest of the
// batch to nobody (counted), and so returns long before the batch's
// callbacks would have run one after another.
func TestShutdownUDPBatch(t *testing.T) {
	started := make(chan struct{}, 32)
	var replied atomic.Int32
	// The 20 datagrams wait in the socket before it is served, so that
	// the first read takes them all in one batch.
	pc, _ := prefilled(t, datagrams(20))
	srv, err := ServePacketConn(pc, &PipeConfig{Logger: quietLogger(),
		OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
			started <- struct{}{}
			time.Sleep(300 * time.Millisecond)
			p.Send(msg, from)
			replied.Add(1)
		})})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	// 20 callbacks of 300 ms one after another would take 6 s.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (%d callbacks ran)", err, replied.Load())
	}
	s := srv.Stats()
	if s.ShutdownDropped == 0 || int(s.ShutdownDropped)+int(replied.Load()) > 20 {
		t.Fatalf("%d replied, %d counted as dropped, of 20", replied.Load(), s.ShutdownDropped)
	}
	t.Logf("%d replied, %d dropped at Shutdown", replied.Load(), s.ShutdownDropped)
}
