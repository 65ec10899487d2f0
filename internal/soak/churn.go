//go:build linux

package soak

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// churn runs workers that each connect to a load listener, exchange msgs
// messages and close, in a loop: clients that come and go.
type churn struct {
	addrs   []netip.AddrPort
	workers int
	msgs    int

	t     tally
	conns atomic.Int64 // connections that did all their exchanges and closed
	errs  atomic.Int64
	err   firstErr
}

const churnPause = 5 * time.Millisecond // between a worker's connections

func (c *churn) run(ctx context.Context, wg *sync.WaitGroup) {
	for w := range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				id := 1<<31 | uint32(w)<<20 | uint32(i)&0xfffff
				c.once(ctx, id, c.addrs[(w+i)%len(c.addrs)])
				sleepCtx(ctx, churnPause)
			}
		}()
	}
}

func (c *churn) once(ctx context.Context, id uint32, to netip.AddrPort) {
	fc, err := dialFramed(ctx, to, id, &c.t)
	if err != nil {
		c.err.dialFailed(ctx, &c.errs, "churn dial %v: %v", to, err)
		return
	}
	defer fc.Close()
	for range c.msgs {
		if err := fc.exchange(kindEcho, loadTimeout); err != nil {
			c.errs.Add(1)
			c.err.set("churn conn to %v: %v", to, err)
			return
		}
	}
	c.conns.Add(1)
}
