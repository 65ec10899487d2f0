package p2pd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"time"
)

// A TCP connection's pipe, accepted or dialled: its goroutine (the server
// side of TLS, then reads under ReadTimeout and IdleTimeout, each message
// dispatched) and its writes under WriteTimeout.

// connLoop is the first goroutine of a TCP connection or client pipe.
func (p *Pipe) connLoop() {
	err := p.handshake()
	if err == nil {
		if p.parent != nil {
			p.parent.enqueue(p)
		}
		p.up()
		err = p.readLoop()
	}
	p.end(err)
}

// end ends the connection's goroutine, and the pipe unless it parked.
func (p *Pipe) end(err error) {
	if err == errParked {
		return // the parker, or whoever takes it out, owns it now
	}
	if p.cr != nil {
		p.cr.release()
	}
	if p.draining.Load() {
		err = nil
	}
	p.terminate(err)
	p.finish()
}

// handshake runs the server side of TLS, bounded by ConnectTimeout and by
// IdleTimeout (a peer silent in its handshake is idle), whichever is
// shorter.
func (p *Pipe) handshake() error {
	tc, ok := p.conn.(*tls.Conn)
	if !ok || p.parent == nil {
		return nil
	}
	ctx := context.Background()
	t := p.cfg.connectTimeout()
	if idle := p.cfg.idleTimeout(true); idle > 0 && (t <= 0 || idle < t) {
		t = idle
	}
	if t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return errorf("p2pd: TLS handshake with %v: %w", p.remote, err)
	}
	return nil
}

// readLoop reads and dispatches the messages of a TCP connection. It
// returns errParked once the connection parked, else why it ended.
//
// Deadlines: a framed message being read must complete within ReadTimeout
// of its first byte; otherwise the connection must not stay silent for
// IdleTimeout. While nothing is pending the deadline is kept win ahead:
// IdleTimeout, or parkAfter where the connection can park. It is moved only
// when a quarter of win has gone by, not at every read (a deadline change
// is a timer update), and a deadline that fires early for that reason is
// moved on, not obeyed.
func (p *Pipe) readLoop() error {
	cfg := p.cfg
	cr := p.cr
	if cr == nil {
		cr = newConnReader(cfg.Framing, cfg.maxMsgSize(), cfg.bufferSize(TCP), p.deliverTCP)
		cr.stopped = p.closed.Load
		cr.budget = cfg.budget
		if p.rc != nil {
			cr.rc = p.rc
		} else {
			cr.src = p.conn
		}
		p.cr = cr
	}
	idle, rt := cfg.idleTimeout(p.parent != nil), cfg.readTimeout()
	if cfg.Framing == FrameRaw {
		rt = 0
	}
	parkable := p.canPark()
	win := idle
	if parkable && (win <= 0 || parkAfter < win) {
		win = parkAfter
	}
	cr.parkNow = parkable
	// Times are monoNow nanoseconds (one clock read, where time.Now makes
	// two). set: the deadline in force, 0 for none; frameStart: 0 when no
	// frame is timed; now: when the last fill returned data if fresh (one
	// clock read per message serves lastRead and the deadline).
	var frameStart, last, set, now int64
	fresh := false
	for {
		if win > 0 || rt > 0 {
			if !fresh {
				now = monoNow()
			}
			last = now
			dl := set
			switch {
			case cr.pending() && rt > 0:
				if frameStart == 0 {
					frameStart = now
					dl = now + int64(rt)
				}
			case win > 0:
				frameStart = 0
				if set-now < int64(win*3/4) {
					dl = now + int64(win)
				}
			default:
				frameStart, dl = 0, 0
			}
			if dl != set {
				p.conn.SetReadDeadline(monoTime(dl))
				set = dl
			}
		}
		fresh = false
		if p.closed.Load() || p.draining.Load() {
			return nil
		}
		err := cr.fill()
		if err == nil {
			now, fresh = monoNow(), true
			p.lastRead.Store(now)
			cr.parkNow = false
			continue
		}
		switch {
		case p.closed.Load() || p.draining.Load():
			return nil
		case err == errParkNow:
			if p.park() {
				return errParked
			}
			parkable, cr.parkNow = false, false
			continue
		case isTimeout(err) && cr.pending() && rt > 0:
			return fmt.Errorf("%w: %d bytes of a frame in %v", ErrReadTimeout, cr.w-cr.r, rt)
		case isTimeout(err) && (idle > 0 || parkable):
			quiet := time.Duration(monoNow() - last)
			if parkable && quiet >= parkAfter && !cr.pending() {
				if p.park() {
					return errParked
				}
				parkable, win = false, idle // refused: wait here
			}
			if idle > 0 && quiet >= idle {
				return fmt.Errorf("%w: nothing received for %v", ErrIdleTimeout, idle)
			}
			// Set early (a quarter, or to park): wait for the rest.
			set = 0
			if win > 0 {
				set = last + int64(win)
			}
			p.conn.SetReadDeadline(monoTime(set))
			continue
		case errors.Is(err, io.EOF):
			return io.EOF
		case errors.Is(err, ErrOverBudget):
			p.countOverBudget()
		}
		return err
	}
}

// park hands the connection to its owner's parker; false if it refused.
func (p *Pipe) park() bool { return p.cfg.park.park(p) }

func (p *Pipe) deliverTCP(msg []byte) { p.dispatch(msg, Peer{AddrPort: p.remote, Local: p.local}) }

// write sends one message on a TCP connection, framed, within
// WriteTimeout; a peer that does not take it in time loses the connection.
func (p *Pipe) write(msg []byte) error {
	f := p.cfg.Framing
	if f == FrameRaw {
		return p.writeAll(msg)
	}
	bp := writeBufs.Get().(*[]byte)
	b, err := appendFrame((*bp)[:0], f, msg, p.cfg.maxMsgSize())
	if err == nil {
		err = p.writeAll(b)
	}
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		writeBufs.Put(bp)
	}
	return err
}

// writeAll writes b whole, one Send at a time, and fails with
// ErrWriteTimeout once the peer has taken nothing for WriteTimeout. The
// write deadline is moved only when less than three quarters of
// WriteTimeout is left (a deadline change is a timer update); a write that
// meets a deadline set early for that reason, or that made progress, goes
// on with a new one. A TLS connection cannot go on after a timeout, so it
// is written in pieces of tlsPiece bytes, each with its own deadline.
func (p *Pipe) writeAll(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	wt := p.cfg.writeTimeout()
	if wt <= 0 {
		if _, err := p.conn.Write(b); err != nil {
			return p.writeError(err)
		}
		return nil
	}
	if _, isTLS := p.conn.(*tls.Conn); isTLS {
		for len(b) > 0 {
			n := min(len(b), tlsPiece)
			p.conn.SetWriteDeadline(time.Now().Add(wt))
			if _, err := p.conn.Write(b[:n]); err != nil {
				return p.writeError(err)
			}
			b = b[n:]
		}
		return nil
	}
	last := monoNow() // when the peer last took something
	if p.wset-last < int64(wt*3/4) {
		p.wset = last + int64(wt)
		p.conn.SetWriteDeadline(monoTime(p.wset))
	}
	for {
		n, err := p.conn.Write(b)
		if err == nil {
			return nil
		}
		b = b[n:]
		if now := monoNow(); isTimeout(err) && (n > 0 || now-last < int64(wt)) {
			if n > 0 {
				last = now
			}
			p.wset = last + int64(wt)
			p.conn.SetWriteDeadline(monoTime(p.wset))
			continue
		}
		return p.writeError(err)
	}
}

// tlsPiece is how much of a message a TLS connection writes under one
// deadline.
const tlsPiece = 64 << 10

// writeError is the error of a failed write; a timeout ends the
// connection, counted.
func (p *Pipe) writeError(err error) error {
	if p.closed.Load() {
		return ErrPipeClosed
	}
	if !isTimeout(err) {
		return sendError(p.remote, err)
	}
	err = fmt.Errorf("%w: the peer took nothing for %v", ErrWriteTimeout, p.cfg.writeTimeout())
	p.stats.writeTimeouts.Add(1)
	if par := p.parent; par != nil {
		par.stats.writeTimeouts.Add(1)
	}
	p.terminate(err)
	return sendError(p.remote, err)
}
