package p2pd

import (
	"sync"
	"time"
)

// The watchdog bounds how long a queued UDP reply waits when a callback
// blocks in the middle of a batch: every stuckAfter it sends the queue of
// any batch that began more than stuckAfter ago, so a reply waits at most
// about twice that. Batches that end normally, in microseconds, never meet
// it. One goroutine serves the whole process, only while batches are being
// dispatched: it ends when the last pipe it watches closes, or after
// idleTicks ticks without batches. It belongs to its owner: a Daemon has
// one for all its listeners, a Listen or Serve* call one for its pipe.
//
// The period is a trade: on a busy 2-core machine, ticking every 1 to 10 ms
// cost 8-10% of UDP echo throughput (bench/), every 50 ms nothing
// measurable.
const (
	stuckAfter = 50 * time.Millisecond
	idleTicks  = 4
)

var watchEpoch = time.Now()

// watchClock is a monotonic clock in nanoseconds, never 0.
func watchClock() int64 { return int64(time.Since(watchEpoch)) + 1 }

type watcher struct {
	mu      sync.Mutex
	running bool
	stop    chan struct{}          // closed to end the running goroutine
	done    chan struct{}          // closed when it has ended
	pipes   map[*udpBatch]struct{} // seen dispatching since the last tick or while stuck
}

// wake tells the watchdog that u dispatches a batch (u.since is set),
// starting it if needed. When u is watched already it is one atomic load:
// u.since and u.watched are each stored before the other is read, here and
// in run, so either wake sees watched false or run sees since set.
func (w *watcher) wake(u *udpBatch) {
	if u.watched.Load() {
		return
	}
	w.mu.Lock()
	if w.pipes == nil {
		w.pipes = make(map[*udpBatch]struct{})
	}
	w.pipes[u] = struct{}{}
	u.watched.Store(true)
	if !w.running {
		w.running = true
		w.stop, w.done = make(chan struct{}), make(chan struct{})
		go w.run(w.stop, w.done)
	}
	w.mu.Unlock()
}

// forget drops u, which is closing; if it was the last pipe watched, the
// goroutine ends, and forget waits for it.
func (w *watcher) forget(u *udpBatch) {
	w.mu.Lock()
	delete(w.pipes, u)
	u.watched.Store(false)
	if !w.running || len(w.pipes) > 0 {
		w.mu.Unlock()
		return
	}
	w.running = false
	stop, done := w.stop, w.done
	w.mu.Unlock()
	close(stop)
	<-done
}

func (w *watcher) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(stuckAfter)
	defer t.Stop()
	idle := 0
	var stuck []*udpBatch
	var sinces []int64
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		}
		now := watchClock()
		stuck, sinces = stuck[:0], sinces[:0]
		w.mu.Lock()
		busy := false
		for u := range w.pipes {
			s := u.since.Load()
			switch {
			case s == 0:
				// Idle: wake adds it back at its next batch.
				u.watched.Store(false)
				if u.since.Load() == 0 {
					delete(w.pipes, u)
				} else {
					u.watched.Store(true)
					busy = true
				}
			case now-s >= int64(stuckAfter):
				stuck, sinces = append(stuck, u), append(sinces, s)
				busy = true
			default:
				busy = true
			}
		}
		if !busy {
			if idle++; idle >= idleTicks && w.done == done {
				w.running = false
				w.mu.Unlock()
				return
			}
		} else {
			idle = 0
		}
		w.mu.Unlock()
		for i, u := range stuck {
			u.flushStuck(sinces[i])
		}
	}
}
