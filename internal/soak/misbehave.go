//go:build linux

package soak

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// misbehave sends the edge daemon messages whose callback panics or
// blocks for blockFor. A panic must cost that one message only: the next
// message on the same connection is echoed. A blocked message is echoed
// after blockFor; the normal clients of slow, on other connections, must
// not notice.
type misbehave struct {
	to      netip.AddrPort
	workers int

	t          tally
	panicsSent atomic.Int64
	blocksSent atomic.Int64
	blocksOK   atomic.Int64 // echoed intact, after blockFor at least
	errs       atomic.Int64
	err        firstErr
}

const (
	blockFor       = 200 * time.Millisecond
	misbehaveEvery = 100 * time.Millisecond // well under EdgeIdleTimeout
)

func (m *misbehave) run(ctx context.Context, wg *sync.WaitGroup) {
	for w := range m.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.client(ctx, 3<<30|uint32(w))
		}()
	}
}

func (m *misbehave) client(ctx context.Context, id uint32) {
	c, err := dialFramed(ctx, m.to, id, &m.t)
	if err != nil {
		m.err.dialFailed(ctx, &m.errs, "misbehaving client: %v", err)
		return
	}
	defer c.Close()
	for i := 0; sleepCtx(ctx, misbehaveEvery); i++ {
		if i%2 == 0 {
			// The panicking message gets no echo; the next one must.
			if err := c.send(kindPanic, false, edgeTimeout); err != nil {
				m.fail("panic message: %v", err)
				return
			}
			m.panicsSent.Add(1)
			if err := c.exchange(kindEcho, edgeTimeout); err != nil {
				m.fail("message after a panic: %v", err)
				return
			}
			continue
		}
		t0 := time.Now()
		m.blocksSent.Add(1)
		if err := c.exchange(kindBlock, edgeTimeout); err != nil {
			m.fail("blocking message: %v", err)
			return
		}
		if time.Since(t0) >= blockFor {
			m.blocksOK.Add(1)
		} else {
			m.fail("blocking message echoed after %v, before %v", time.Since(t0), blockFor)
		}
	}
}

func (m *misbehave) fail(format string, a ...any) {
	m.errs.Add(1)
	m.err.set(format, a...)
}
