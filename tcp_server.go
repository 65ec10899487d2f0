package p2pd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// A TCP server pipe: its accept loop, the connection limits (MaxConns and
// the slot budget, eviction of silent connections, rejection), and the
// queue that Accept reads.

// acceptLoop is a TCP server's goroutine. Its cold paths are functions of
// their own, so that the goroutine fits in the smallest stack. A listener
// that can park (canPark) does when no connection has come for parkAfter:
// the goroutine returns, and the parker starts a new one when a
// connection comes or the listener closes.
func (p *Pipe) acceptLoop() {
	if err := p.acceptFrom(p.ln, p.fan.first()); err != errParked {
		p.endServer(err)
	}
}

// acceptFrom accepts connections on ln until the server ends, and returns
// why (nil for a local close or Shutdown), or errParked. s is ln's entry
// among the server's sockets (PipeConfig.Sockets), nil if it has only ln.
func (p *Pipe) acceptFrom(ln net.Listener, s *fanSock) error {
	var delay time.Duration
	var dl deadline
	if l, ok := ln.(interface{ SetDeadline(time.Time) error }); ok && ln == p.ln && p.canPark() {
		dl.init(l.SetDeadline)
	}
	for {
		dl.keep()
		c, err := ln.Accept()
		if err == nil {
			delay = 0
			if s != nil {
				s.accepts.Add(1)
			}
			if dl.on {
				dl.last = time.Now()
			}
			p.addConn(c)
			continue
		}
		if handled, parked := p.timedOut(&dl, err); parked {
			return errParked
		} else if handled {
			continue
		}
		if end, reason := p.acceptError(err, &delay); end {
			return reason
		}
	}
}

// acceptError decides what an accept error means: end the server (with
// reason, nil for a local close), or accept again, after a backoff for
// errors worth retrying.
//
//go:noinline
func (p *Pipe) acceptError(err error, delay *time.Duration) (end bool, reason error) {
	if p.closed.Load() || p.draining.Load() {
		return true, nil
	}
	if isTemporary(err) {
		*delay = backoff(*delay)
		p.stats.acceptErrors.Add(1)
		if ok, held := p.cfg.warns.allow("accept"); ok {
			p.cfg.logger().Warn("p2pd: accept error, retrying (counted in PipeStats.AcceptErrors)", "addr", p.local, "err", err, "delay", *delay, "since_last_warning", held)
		}
		return !p.sleep(*delay), nil
	}
	return true, err
}

// endServer ends a TCP server once it accepts no more: it waits for the
// connections, which end on their own when draining, or because the
// server closed them.
//
//go:noinline
func (p *Pipe) endServer(reason error) {
	if reason != nil {
		p.terminate(reason)
		for _, c := range p.Clients() {
			c.terminate(nil)
		}
	}
	if !p.draining.Load() {
		p.terminate(nil)
	}
	p.waitFan(nil) // the other sockets' accept loops, which end now too
	for {
		p.mu.Lock()
		var c *Pipe
		for c = range p.conns {
			break
		}
		p.mu.Unlock()
		if c == nil {
			break
		}
		<-c.done.wait()
	}
	p.terminate(nil)
	p.finish()
}

//go:noinline
func (p *Pipe) addConn(conn net.Conn) {
	c := newPipe(p.cfg, TCP, false, p)
	c.local = addrPortOf(conn.LocalAddr())
	if z := p.local.Addr().Zone(); z != "" && c.local.Addr().Zone() == "" {
		c.local = netip.AddrPortFrom(c.local.Addr().WithZone(z), c.local.Port())
	}
	c.remote = addrPortOf(conn.RemoteAddr())
	c.route = p.route
	c.route.Bound = c.local
	p.cfg.setLinger(conn)
	if p.cfg.TLS != nil {
		conn = tls.Server(conn, p.cfg.TLS)
	} else if tc, ok := conn.(*net.TCPConn); ok && haveRawRead {
		c.rc, _ = tc.SyscallConn()
	}
	c.conn = conn
	c.lastRead.Store(monoNow())
	p.mu.Lock()
	if p.closed.Load() || p.draining.Load() {
		p.mu.Unlock()
		conn.Close()
		return
	}
	full := false
	if max := p.cfg.maxConns(); max > 0 && len(p.conns)-p.evicting >= max {
		full = true
	} else if !p.cfg.limit.take() {
		full = true
	}
	var victim *Pipe
	if full {
		if victim = p.evictLocked(); victim == nil {
			p.mu.Unlock()
			p.reject(conn)
			return
		}
		p.cfg.limit.force() // the evicted connection gives its slot back when it ends
	}
	p.stats.accepted.Add(1)
	if p.conns == nil {
		p.conns = make(map[*Pipe]struct{})
		p.byAddr = make(map[netip.AddrPort]*Pipe)
	}
	p.conns[c] = struct{}{}
	p.byAddr[c.remote] = c
	p.mu.Unlock()
	if victim != nil {
		victim.terminate(fmt.Errorf("%w: silent for %v while the server was full", ErrEvicted, time.Duration(monoNow()-victim.lastRead.Load()).Round(time.Millisecond)))
	}
	c.start()
}

// evictAfter is how long a connection must have received nothing before a
// newcomer may take its slot.
const evictAfter = time.Second

// evictScan bounds the connections evictLocked looks at: a sample, so
// that a flood of newcomers costs little per connection.
const evictScan = 64

// evictLocked makes room for a newcomer under slot pressure: it closes,
// among up to evictScan of the server's connections, the one that has
// received nothing for the longest, if that is at least evictAfter, and
// returns it for the caller to close (with reason ErrEvicted) once p.mu,
// held now, is released; nil if there is none.
//
// A peer that holds a slot while sending (next to) nothing, such as a
// FrameRaw connection trickling one byte per idle period, or a TLS peer
// silent in its handshake, thus loses it to a peer that comes; a peer that
// talks keeps it.
func (p *Pipe) evictLocked() *Pipe {
	var victim *Pipe
	oldest := monoNow() - int64(evictAfter)
	n := 0
	for c := range p.conns {
		if n++; n > evictScan {
			break
		}
		if c.closed.Load() {
			continue
		}
		if t := c.lastRead.Load(); t <= oldest {
			victim, oldest = c, t
		}
	}
	if victim == nil {
		return nil
	}
	victim.evicted = true
	p.evicting++
	if e := p.stats.evicted.Add(1); e&(e-1) == 0 {
		p.cfg.logger().Warn("p2pd: connection limit reached, closing the longest silent connections", "addr", p.local, "evicted", e)
	}
	return victim
}

// monoNow is a monotonic clock in nanoseconds since monoEpoch: one clock
// read, where time.Now makes two (wall and monotonic). It is above 0 once
// the package is initialised.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// monoTime is the deadline of monoNow time t; 0 is none.
func monoTime(t int64) time.Time {
	if t == 0 {
		return time.Time{}
	}
	return monoEpoch.Add(time.Duration(t))
}

var monoEpoch = time.Now()

// reject closes a connection over a limit at once (with a reset, so the
// peer learns it now and no TIME_WAIT is left), counts and logs it.
func (p *Pipe) reject(conn net.Conn) {
	n := p.stats.rejected.Add(1) // before the close, which the peer sees
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
	if n&(n-1) == 0 { // 1, 2, 4, 8...: a flood does not flood the log
		p.cfg.logger().Warn("p2pd: connection limit reached, closing new connections", "addr", p.local, "rejected", n)
	}
}

// backoff returns the next accept retry delay: 5 ms doubling to 1 s.
func backoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	return min(2*d, time.Second)
}

// sleep waits d unless the pipe closes first (then it returns false).
func (p *Pipe) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !p.draining.Load()
	case <-p.quit.wait():
		return false
	}
}

// isTemporary reports errors worth retrying: out of descriptors or
// buffers, aborted connections, timeouts.
func isTemporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM, syscall.EINTR, syscall.EAGAIN, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return true
		}
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// client finds a TCP server's connection by peer address.
func (p *Pipe) client(to netip.AddrPort) *Pipe {
	to = unmap(to)
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.byAddr[to]; c != nil {
		return c
	}
	if to.Addr().Zone() == "" {
		for a, c := range p.byAddr {
			if sameAddr(a, to) {
				return c
			}
		}
	}
	return nil
}

// Accept waits for the next connection of a TCP server pipe and returns
// its pipe (P2PD's "await pipe"). Live connections are queued for it, up
// to PipeConfig.QueueSize; beyond that they are served but not queued
// (counted in [PipeStats].NotQueued). A connection that ends while queued
// leaves the queue, so a server whose owner never calls Accept holds
// nothing for it. The returned pipe may end at any time (see [Pipe.Done]).
func (p *Pipe) Accept(ctx context.Context) (*Pipe, error) {
	if p.ln == nil {
		return nil, errorf("p2pd: accept: %w: not a TCP server pipe", ErrInvalid)
	}
	if ctx == nil {
		return nil, errorf("p2pd: accept: %w: nil context", ErrInvalid)
	}
	for {
		p.mu.Lock()
		if len(p.acceptQ) > 0 {
			c := p.acceptQ[0]
			p.acceptQ[0] = nil
			p.acceptQ = p.acceptQ[1:]
			if len(p.acceptQ) == 0 {
				p.acceptQ = nil
			}
			p.mu.Unlock()
			return c, nil
		}
		if p.closed.Load() {
			p.mu.Unlock()
			return nil, ErrPipeClosed
		}
		if p.acceptW == nil {
			p.acceptW = make(chan struct{})
		}
		w := p.acceptW
		p.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.quit.wait():
			return nil, ErrPipeClosed
		}
	}
}

// enqueue offers c, a connection up and running, to Accept.
func (p *Pipe) enqueue(c *Pipe) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.acceptQ) >= p.cfg.queueSize() {
		p.dropped.Add(1)
		return
	}
	p.acceptQ = append(p.acceptQ, c)
	if p.acceptW != nil {
		close(p.acceptW)
		p.acceptW = nil
	}
}

// dequeueLocked removes c from the accept queue, if it is there; p.mu is
// held.
func (p *Pipe) dequeueLocked(c *Pipe) {
	if i := slices.Index(p.acceptQ, c); i >= 0 {
		p.acceptQ = slices.Delete(p.acceptQ, i, i+1)
		if len(p.acceptQ) == 0 {
			p.acceptQ = nil
		}
	}
}

// Clients returns the pipes of a TCP server's live connections.
func (p *Pipe) Clients() []*Pipe {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := make([]*Pipe, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	return cs
}
