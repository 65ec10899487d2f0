package p2pd

import (
	"errors"
	"fmt"
	"time"
)

// What parking (park_linux.go) needs from the pipes' loops, on every
// system: the resumed goroutine, and the deadline that tells a loop it
// has been silent for parkAfter.

// errParked says that a pipe's loop parked it: its goroutine returns,
// doing nothing more.
var errParked = errors.New("p2pd: parked")

// parkAfter is how long a pipe that can park stays silent before it does.
// Some park at once when there is nothing to read: a connection that has
// sent nothing since it began or resumed, a UDP socket that has just
// opened or resumed; a listener opens parked.
const parkAfter = 2 * time.Second

// resume is the goroutine of a pipe taken out of its parker
// (park_linux.go): a listener accepts, a UDP socket reads; a connection
// reads on, or, expired, ends with ErrIdleTimeout. One woken because it is
// closing or draining ends without another read.
func (p *Pipe) resume(expired bool) {
	closing := p.closed.Load() || p.draining.Load()
	switch {
	case closing && p.ln != nil:
		p.endServer(nil)
		return
	case closing && p.proto == UDP:
		p.terminate(nil)
		p.finish()
		return
	case closing:
		p.end(nil)
		return
	case p.ln != nil:
		p.acceptLoop()
		return
	case p.proto == UDP:
		p.udpLoop()
		return
	}
	var err error
	if expired {
		err = fmt.Errorf("%w: nothing received for %v", ErrIdleTimeout, p.cfg.idleTimeout(true))
	} else {
		err = p.readLoop()
	}
	p.end(err)
}

// deadline is the read (or accept) deadline of a pipe while it can park:
// parkAfter after the last message or connection, moved only when a
// quarter of that has gone by (a deadline change is a timer update).
type deadline struct {
	set  func(time.Time) error // the socket's SetReadDeadline, or a listener's SetDeadline
	on   bool
	last time.Time // the last message or connection, or when the loop began
	at   time.Time // the deadline in force
}

//go:noinline
func (d *deadline) init(set func(time.Time) error) {
	d.set, d.on, d.last = set, true, time.Now()
}

// keep moves the deadline on if a quarter of parkAfter has gone by.
func (d *deadline) keep() {
	if d.on && d.at.Sub(d.last) < parkAfter*3/4 {
		d.at = d.last.Add(parkAfter)
		d.set(d.at)
	}
}

// early reports a deadline that fired before parkAfter of silence (set
// early, a quarter ahead), and moves it to the right time.
//
//go:noinline
func (d *deadline) early() bool {
	if time.Since(d.last) >= parkAfter {
		return false
	}
	d.at = d.last.Add(parkAfter)
	d.set(d.at)
	return true
}

// off clears the deadline: the parker refused, the loop waits here.
//
//go:noinline
func (d *deadline) off() {
	d.on = false
	d.set(time.Time{})
}

// timedOut handles an error of the read or accept of a loop that can
// park: a deadline that fired early is moved on; one that ends parkAfter of
// silence parks the pipe, or, refused, is cleared. handled is false for any
// other error; parked says that the loop must return errParked.
//
//go:noinline
func (p *Pipe) timedOut(dl *deadline, err error) (handled, parked bool) {
	if !dl.on || !isTimeout(err) || p.closed.Load() || p.draining.Load() {
		return false, false
	}
	if dl.early() {
		return true, false
	}
	if p.park() {
		return true, true
	}
	dl.off()
	return true, false
}
