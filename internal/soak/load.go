//go:build linux

package soak

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// load holds n TCP connections over the load daemon's listeners. Each
// connects, exchanges one message, then exchanges one message every
// interval (with jitter) until stopped.
type load struct {
	addrs    []netip.AddrPort
	n        int
	interval time.Duration

	t         tally
	connected atomic.Int64
	dialErrs  atomic.Int64
	connErrs  atomic.Int64 // connections that failed after connecting: dropped
	err       firstErr

	wg   sync.WaitGroup
	quit chan struct{}
}

const (
	loadDialers = 64               // connections being set up at once
	loadTimeout = 10 * time.Second // one exchange
)

// start starts the n connections and returns when each has connected
// and exchanged its first message, or failed.
func (l *load) start(ctx context.Context) {
	l.quit = make(chan struct{})
	sem := make(chan struct{}, loadDialers)
	var ready sync.WaitGroup
	ready.Add(l.n)
	l.wg.Add(l.n)
	for i := range l.n {
		go l.conn(ctx, uint32(i), l.addrs[i%len(l.addrs)], sem, &ready)
	}
	ready.Wait()
}

func (l *load) conn(ctx context.Context, id uint32, to netip.AddrPort, sem chan struct{}, ready *sync.WaitGroup) {
	defer l.wg.Done()
	sem <- struct{}{}
	c, err := dialFramed(ctx, to, id, &l.t)
	if err == nil {
		if err = c.exchange(kindEcho, loadTimeout); err != nil {
			c.Close()
		}
	}
	<-sem
	ready.Done()
	if err != nil {
		l.dialErrs.Add(1)
		l.err.set("load conn %d to %v: connect: %v", id, to, err)
		return
	}
	defer c.Close()
	l.connected.Add(1)
	wait := time.NewTimer(rand.N(l.interval) + 1)
	defer wait.Stop()
	for {
		select {
		case <-l.quit:
			return
		case <-wait.C:
		}
		// Stop is only seen between exchanges: an error is never ours.
		if err := c.exchange(kindEcho, loadTimeout); err != nil {
			l.connErrs.Add(1)
			l.err.set("load conn %d to %v: %v", id, to, err)
			return
		}
		wait.Reset(l.interval/2 + rand.N(l.interval))
	}
}

// close stops every connection after its exchange in progress and waits.
func (l *load) close() {
	if l.quit != nil {
		close(l.quit)
	}
	l.wg.Wait()
}
