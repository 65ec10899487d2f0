package p2pd

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestUDPKeptMsg: callbacks that keep msg (against the MsgCallback
// contract) while many pipes take and give back receive batches find, at
// worst, stale bytes in what they kept: never freed memory, which would
// kill the process.
func TestUDPKeptMsg(t *testing.T) {
	const (
		clients   = 32
		perClient = 200
		size      = 100  // bytes per datagram
		slot      = 2048 // every pipe's BufferSize: they share one pool of batches
	)
	type keptMsg struct{ msg, copy []byte }
	var mu sync.Mutex
	kept := make([]keptMsg, 0, 2*clients*perClient)
	keep := func(msg []byte) {
		mu.Lock()
		if len(kept) < cap(kept) {
			kept = append(kept, keptMsg{msg, bytes.Clone(msg)})
		}
		mu.Unlock()
	}
	srv := listen(t, UDP, loopRoute(t, IPv4), &PipeConfig{BufferSize: slot,
		OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
			keep(msg)
			p.Send(msg, from)
		})})
	var echoes atomic.Int64
	ccfg := &PipeConfig{BufferSize: slot, OnMsg: MsgCallbackFunc(func(msg []byte, _ Peer, _ *Pipe) {
		keep(msg)
		echoes.Add(1)
		time.Sleep(100 * time.Microsecond) // holding its batch, as the others take theirs
	})}
	pipes := make([]*Pipe, clients)
	for i := range pipes {
		pipes[i] = dial(t, UDP, srv.LocalAddr(), ccfg)
	}

	// Another goroutine reads what was kept while the traffic flows.
	stop := make(chan struct{})
	var readerWG sync.WaitGroup
	readerWG.Add(1)
	go func() {
		defer readerWG.Done()
		sum := 0
		for {
			select {
			case <-stop:
				runtime.KeepAlive(sum)
				return
			case <-time.After(time.Millisecond):
			}
			mu.Lock()
			ks := kept[:len(kept):len(kept)]
			mu.Unlock()
			for _, k := range ks {
				for _, c := range k.msg {
					sum += int(c)
				}
			}
		}
	}()

	deadline := time.Now().Add(10 * time.Second)
	var senders sync.WaitGroup
	for i, p := range pipes {
		senders.Add(1)
		go func() {
			defer senders.Done()
			msg := make([]byte, size)
			for j := 0; j < perClient && time.Now().Before(deadline); j++ {
				copy(msg, fmt.Appendf(nil, "client %02d datagram %04d ", i, j))
				p.Send(msg, Peer{AddrPort: netip.AddrPort{}})
				if j%16 == 15 {
					time.Sleep(100 * time.Microsecond) // bursts, not only drops
				}
			}
		}()
	}
	senders.Wait()
	// Until the echoes stop coming (some datagrams may be dropped).
	for last := int64(-1); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		n := echoes.Load()
		if n == clients*perClient || n == last {
			break
		}
		last = n
	}
	for _, p := range pipes {
		p.Close()
	}
	for srv.ub.holdsBuffers() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	readerWG.Wait()

	for range 3 {
		runtime.GC()
	}
	garbage := make([][]byte, 0, 512) // give freed memory a chance to be reused
	for range cap(garbage) {
		garbage = append(garbage, make([]byte, slot))
	}
	runtime.GC()
	mu.Lock()
	defer mu.Unlock()
	if len(kept) == 0 {
		t.Fatal("no datagram received")
	}
	stale := 0
	for _, k := range kept {
		if len(k.msg) != size {
			t.Fatalf("kept slice of %d bytes, want %d", len(k.msg), size)
		}
		if !bytes.Equal(k.msg, k.copy) {
			stale++
		}
	}
	runtime.KeepAlive(garbage)
	t.Logf("%d datagrams kept (%d echoes), %d of them since overwritten", len(kept), echoes.Load(), stale)
}
