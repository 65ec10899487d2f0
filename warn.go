package p2pd

import (
	"sync"
	"time"
)

// warnEvery is how often a warning of one kind is logged per owner (a
// Daemon, or one Listen call); the others in between are counted and the
// next one says how many there were.
const warnEvery = 10 * time.Second

// warnGate rate-limits the warnings that a fault repeats on every
// listener and retry (accept and read errors at the descriptor limit, say),
// so that a fault costs a line per interval, not a line per retry. The
// zero value is ready.
type warnGate struct {
	mu    sync.Mutex
	kinds map[string]*warnKind
}

type warnKind struct {
	next       time.Time
	suppressed uint64
}

// allow reports whether a warning of kind may be logged now, and how many
// were held back since the last one.
func (g *warnGate) allow(kind string) (bool, uint64) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.kinds == nil {
		g.kinds = make(map[string]*warnKind)
	}
	k := g.kinds[kind]
	if k == nil {
		k = &warnKind{}
		g.kinds[kind] = k
	}
	if now.Before(k.next) {
		k.suppressed++
		return false, 0
	}
	n := k.suppressed
	k.next, k.suppressed = now.Add(warnEvery), 0
	return true, n
}
