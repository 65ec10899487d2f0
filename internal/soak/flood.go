//go:build linux

package soak

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pd/p2pd"
)

// flood sends UDP datagrams to one listener of the edge daemon far faster
// than its callback handles them (it sleeps floodDelay per flood
// datagram), in rounds: flood for floodFor, stop, and time how long until
// an ordinary echo comes back. During each round the Go heap, measured
// after a GC, must not grow by more than floodHeapMax; the kernel's drops
// are read from the listener's PipeStats.RecvDropped.
type flood struct {
	ln *p2pd.Pipe // the edge daemon's UDP listener

	rounds       atomic.Int64
	sent         atomic.Uint64
	answered     atomic.Uint64 // flood datagrams echoed back
	heapGrowth   atomic.Int64  // the largest, bytes
	rssGrowth    atomic.Int64  // the largest, bytes
	recoveryMax  atomic.Int64  // ns: flood stopped → first echo
	notRecovered atomic.Int64  // rounds without an echo within recoverWait
	droppedStart uint64
	err          firstErr
}

const (
	floodDelay   = time.Millisecond // the callback's time per flood datagram: 1000/s at most
	floodBurst   = 100              // datagrams sent every floodTick: 50,000/s
	floodTick    = 2 * time.Millisecond
	floodFor     = 3 * time.Second
	floodPause   = time.Second
	recoverWait  = 5 * time.Second
	floodHeapMax = 16 << 20 // receive batches are Go heap (2 MiB each at the defaults), pooled while busy
	floodSize    = 200      // bytes per flood datagram
)

func (f *flood) run(ctx context.Context, wg *sync.WaitGroup) {
	f.droppedStart = f.ln.Stats().RecvDropped
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			f.round(ctx)
			sleepCtx(ctx, floodPause)
		}
	}()
}

func (f *flood) dropped() uint64 { return f.ln.Stats().RecvDropped - f.droppedStart }

func (f *flood) round(ctx context.Context) {
	if err := udpEcho(f.ln.LocalAddr(), time.Second); err != nil {
		f.err.set("UDP echo before a flood: %v", err)
	}
	heap0, rss0 := liveHeap(), rss()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(f.ln.LocalAddr()))
	if err != nil {
		f.err.set("flood socket: %v", err)
		return
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() { // counts the echoes; ends when c is closed
		defer readers.Done()
		var b [2048]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				if !isClosed(err) {
					continue // ECONNREFUSED and the like: keep reading
				}
				return
			}
			f.answered.Add(1)
		}
	}()
	fctx, cancel := context.WithTimeout(ctx, floodFor)
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		f.send(fctx, c)
	}()
	<-fctx.Done()
	if ctx.Err() == nil { // measured while the socket is still flooded
		maxInt64(&f.heapGrowth, int64(liveHeap())-int64(heap0))
		maxInt64(&f.rssGrowth, rss()-rss0)
	}
	cancel()
	<-sending
	stopped := time.Now()
	f.rounds.Add(1)
	f.recover(ctx, stopped)
	c.Close()
	readers.Wait()
}

// send floods until ctx ends.
func (f *flood) send(ctx context.Context, c *net.UDPConn) {
	var b [floodSize]byte
	t := time.NewTicker(floodTick)
	defer t.Stop()
	for seq := uint64(0); ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for range floodBurst {
			seq++
			fillMsg(b[:], kindFlood, 0xfffffff2, seq)
			if _, err := c.Write(b[:]); err == nil {
				f.sent.Add(1)
			}
		}
	}
}

// recover waits until an ordinary echo comes back after the flood.
func (f *flood) recover(ctx context.Context, stopped time.Time) {
	for time.Since(stopped) < recoverWait {
		if ctx.Err() != nil {
			return
		}
		if udpEcho(f.ln.LocalAddr(), 100*time.Millisecond) == nil {
			maxInt64(&f.recoveryMax, int64(time.Since(stopped)))
			return
		}
	}
	f.notRecovered.Add(1)
	f.err.set("no UDP echo within %v of the flood's end", recoverWait)
}

// liveHeap returns the heap in use after a GC.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
