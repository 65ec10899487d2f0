//go:build linux

package soak

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// slow opens slowloris connections to the edge daemon, whose IdleTimeout
// and ReadTimeout are short: half send nothing, half trickle a frame one
// byte every trickleEvery. Each must be closed by the daemon (the client
// reads EOF or a reset) within slowLimit. Meanwhile normal clients on the
// same listener exchange a message every normalEvery and must see no
// error.
type slow struct {
	to      netip.AddrPort // the edge daemon's TCP listener
	workers int            // slowloris workers; as many normal clients

	opened    atomic.Int64
	closed    atomic.Int64 // closed by the daemon within slowLimit
	notClosed atomic.Int64
	silentMin atomic.Int64 // ns from connect to close, silent connections
	silentMax atomic.Int64
	trickMin  atomic.Int64 // ns from the first byte to close, trickling ones
	trickMax  atomic.Int64

	normal     tally
	normalErrs atomic.Int64
	latencyMax atomic.Int64 // ns, normal clients
	err        firstErr
}

const (
	// Twice the 500 ms / 1 s one would pick: the normal clients beside
	// the slow ones must not be taken for idle when the machine is so
	// busy that goroutines wait up to half a second for a CPU.
	EdgeIdleTimeout = time.Second
	EdgeReadTimeout = 2 * time.Second
	trickleEvery    = 100 * time.Millisecond
	slowLimit       = 6 * time.Second
	normalEvery     = 100 * time.Millisecond
	edgeTimeout     = 5 * time.Second // one exchange of a normal client
)

func (s *slow) run(ctx context.Context, wg *sync.WaitGroup) {
	s.silentMin.Store(int64(time.Hour))
	s.trickMin.Store(int64(time.Hour))
	for w := range s.workers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				s.loris(ctx, w%2 == 1)
			}
		}()
		go func() {
			defer wg.Done()
			s.normalClient(ctx, 2<<30|uint32(w))
		}()
	}
}

// loris opens one slow connection and waits for the daemon to close it.
func (s *slow) loris(ctx context.Context, trickle bool) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", s.to.String())
	if err != nil {
		if ctx.Err() == nil {
			s.err.set("slowloris dial: %v", err)
			sleepCtx(ctx, 100*time.Millisecond)
		}
		return
	}
	defer c.Close()
	s.opened.Add(1)
	frame := []byte{0, 0, 0, 100} // a 100-byte frame, never finished
	start := time.Now()
	var buf [64]byte
	for i := 0; time.Since(start) < slowLimit; i++ {
		if ctx.Err() != nil {
			s.opened.Add(-1) // not judged: the soak is over
			return
		}
		if trickle {
			b := byte('x')
			if i < len(frame) {
				b = frame[i]
			}
			if _, err := c.Write([]byte{b}); err != nil {
				s.closedAfter(start, trickle)
				return
			}
		}
		c.SetReadDeadline(time.Now().Add(trickleEvery))
		_, err := c.Read(buf[:])
		switch {
		case err == nil:
			s.err.set("slowloris got data from the daemon")
		case errors.Is(err, os.ErrDeadlineExceeded):
		default: // EOF or reset: the daemon closed it
			s.closedAfter(start, trickle)
			return
		}
	}
	s.notClosed.Add(1)
	s.err.set("slowloris connection (trickle=%v) still open after %v", trickle, slowLimit)
}

func (s *slow) closedAfter(start time.Time, trickle bool) {
	d := int64(time.Since(start))
	s.closed.Add(1)
	if trickle {
		minInt64(&s.trickMin, d)
		maxInt64(&s.trickMax, d)
	} else {
		minInt64(&s.silentMin, d)
		maxInt64(&s.silentMax, d)
	}
}

// normalClient exchanges a message every normalEvery until ctx ends.
func (s *slow) normalClient(ctx context.Context, id uint32) {
	c, err := dialFramed(ctx, s.to, id, &s.normal)
	if err != nil {
		s.err.dialFailed(ctx, &s.normalErrs, "normal edge client: %v", err)
		return
	}
	defer c.Close()
	for sleepCtx(ctx, normalEvery) {
		t0 := time.Now()
		if err := c.exchange(kindEcho, edgeTimeout); err != nil {
			s.normalErrs.Add(1)
			s.err.set("normal edge client: %v", err)
			return
		}
		maxInt64(&s.latencyMax, int64(time.Since(t0)))
	}
}

func minInt64(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v >= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}
