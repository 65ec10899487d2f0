package p2pd

import "sync/atomic"

// PipeStats are a pipe's counters, read with [Pipe.Stats]. Counters only
// grow; the ones that do not apply to a pipe stay zero.
type PipeStats struct {
	Conns           int    // TCP server: connections open now
	Accepted        uint64 // TCP server: connections accepted and served
	Rejected        uint64 // TCP server: connections closed at once over MaxConns (the pipe's or the Daemon's)
	Evicted         uint64 // TCP server: silent connections closed to make room for new ones (ErrEvicted)
	WriteTimeouts   uint64 // TCP: connections closed because the peer did not take a Send (ErrWriteTimeout); a server counts its connections'
	Unhandled       uint64 // messages that no MsgCB, subscription or link took; a server counts its connections'
	ShutdownDropped uint64 // UDP: datagrams read in a batch but not handed to the callback because the pipe was shutting down
	AcceptErrors    uint64 // TCP server: failed accepts retried after a backoff (out of descriptors, ...)
	NotQueued       uint64 // TCP server: served connections that Accept's full queue did not keep
	RecvDropped     uint64 // UDP: datagrams the system dropped for a full receive buffer (Linux; 0 elsewhere)
	SendDropped     uint64 // UDP: queued replies the system refused (see PipeConfig.UDPBatch)
	SubDropped      uint64 // messages that full subscription queues dropped
	Panics          uint64 // callbacks that panicked (recovered); a server counts its connections'
	OverBudget      uint64 // TCP: connections closed for partial frames over MaxBuffered (ErrOverBudget); a server counts its connections'
}

type pipeCounters struct {
	accepted, rejected, acceptErrors, panics           atomic.Uint64
	evicted, writeTimeouts, unhandled, shutdownDropped atomic.Uint64
	overBudget, subDropped                             atomic.Uint64
}

// Stats returns the pipe's counters.
func (p *Pipe) Stats() PipeStats {
	s := PipeStats{
		Accepted:        p.stats.accepted.Load(),
		Rejected:        p.stats.rejected.Load(),
		Evicted:         p.stats.evicted.Load(),
		WriteTimeouts:   p.stats.writeTimeouts.Load(),
		Unhandled:       p.stats.unhandled.Load(),
		ShutdownDropped: p.stats.shutdownDropped.Load(),
		AcceptErrors:    p.stats.acceptErrors.Load(),
		NotQueued:       p.dropped.Load(),
		Panics:          p.stats.panics.Load(),
		OverBudget:      p.stats.overBudget.Load(),
	}
	p.mu.Lock()
	s.Conns = len(p.conns)
	p.mu.Unlock()
	s.SubDropped = p.stats.subDropped.Load()
	if p.ub != nil {
		s.SendDropped = p.ub.sendDropped()
	}
	if p.proto == UDP && p.server {
		s.RecvDropped = recvDropped(p.udp)
	}
	p.fan.addStats(&s)
	return s
}

// connLimit caps the connections of several pipes together (a Daemon's).
// A nil *connLimit has no cap.
type connLimit struct {
	max int64
	n   atomic.Int64
}

func (l *connLimit) take() bool {
	if l == nil {
		return true
	}
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

// force takes a slot beyond the cap, for one that is being given back.
func (l *connLimit) force() {
	if l != nil {
		l.n.Add(1)
	}
}

func (l *connLimit) give() {
	if l != nil {
		l.n.Add(-1)
	}
}

// countOverBudget counts a connection closed with ErrOverBudget, on its
// server too.
func (p *Pipe) countOverBudget() {
	p.stats.overBudget.Add(1)
	if par := p.parent; par != nil {
		par.stats.overBudget.Add(1)
	}
}

// budget caps the bytes that the connections of several pipes hold in
// carry buffers (see connReader). A nil *budget has no cap.
type budget struct {
	max int64
	n   atomic.Int64
}

// take charges n bytes if they fit.
func (b *budget) take(n int) bool {
	if b == nil {
		return true
	}
	for {
		cur := b.n.Load()
		if cur+int64(n) > b.max {
			return false
		}
		if b.n.CompareAndSwap(cur, cur+int64(n)) {
			return true
		}
	}
}

// give gives back n bytes taken.
func (b *budget) give(n int) {
	if b != nil && n != 0 {
		b.n.Add(-int64(n))
	}
}

// DaemonStats are a daemon's counters: its listeners' PipeStats summed.
type DaemonStats struct {
	Listeners int
	PipeStats
}

// Stats returns the sums of the counters of the daemon's listeners (a
// listener closed meanwhile no longer counts: read them before Close).
func (d *Daemon) Stats() DaemonStats {
	ls := d.Listeners()
	s := DaemonStats{Listeners: len(ls)}
	for _, p := range ls {
		ps := p.Stats()
		s.Conns += ps.Conns
		s.Accepted += ps.Accepted
		s.Rejected += ps.Rejected
		s.Evicted += ps.Evicted
		s.WriteTimeouts += ps.WriteTimeouts
		s.Unhandled += ps.Unhandled
		s.ShutdownDropped += ps.ShutdownDropped
		s.AcceptErrors += ps.AcceptErrors
		s.NotQueued += ps.NotQueued
		s.RecvDropped += ps.RecvDropped
		s.SendDropped += ps.SendDropped
		s.SubDropped += ps.SubDropped
		s.Panics += ps.Panics
		s.OverBudget += ps.OverBudget
	}
	return s
}
