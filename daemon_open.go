package p2pd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
)

// How a call opens listeners: it reserves room under the guard, claims the
// keys it binds, binds them one after another (see bindAll), and registers
// what it opened, or closes it all again (all or nothing).

// reserve checks the daemon is open and the guard, and reserves n listeners
// for a call in progress. The caller must call release(n).
func (d *Daemon) reserve(op string, n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return wrapOp(op, ErrDaemonClosed)
	}
	have := len(d.listeners) + d.reserved
	if limit := d.maxListeners(); limit >= 0 && have+n > limit {
		return &LimitError{Op: op, Want: n, Have: have, Limit: limit}
	}
	d.reserved += n
	d.own.add(1)
	return nil
}

func (d *Daemon) release(n int) {
	d.mu.Lock()
	d.reserved -= n
	d.mu.Unlock()
	d.own.done()
}

// claim reserves fixed-port key k for a call about to bind it, so that two
// calls in progress never both bind one key (UDP with ReuseAddr, or a
// Control hook setting SO_REUSEPORT, would let them). It fails when the
// daemon listens there or another call is binding it.
func (d *Daemon) claim(k listenKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.listeners[k]; ok || d.binding[k] {
		return false
	}
	if d.binding == nil {
		d.binding = make(map[listenKey]bool)
	}
	d.binding[k] = true
	return true
}

// unclaimLocked gives back keys that claim reserved; d.mu is held.
func (d *Daemon) unclaimLocked(keys []listenKey) {
	for _, k := range keys {
		delete(d.binding, k)
	}
	if len(d.binding) == 0 {
		d.binding = nil // an emptied map keeps its room: a call of 4,000 left 96 B per listener
	}
}

// keyOf is the lookup key of a listener opened for s.
func keyOf(s Specific, port uint16) listenKey {
	return listenKey{f: s.Route.Family, proto: s.Proto, port: port, ip: s.Route.Bound.Addr()}
}

// checkSpecifics validates specs before anything is bound: a known protocol,
// a valid family, a bound route of that family (unbound routes are bound to
// their default address, port 0, as Listen does).
func checkSpecifics(op string, specs []Specific) ([]Specific, error) {
	out := make([]Specific, len(specs))
	for i, s := range specs {
		if s.Proto != TCP && s.Proto != UDP {
			return nil, wrapOp(op, fmt.Errorf("%w: protocol %v", ErrInvalid, s.Proto))
		}
		if err := s.Route.checkFamily(); err != nil {
			return nil, wrapOp(op, err)
		}
		if !s.Route.IsBound() {
			r, err := s.Route.Bind("", 0)
			if err != nil {
				return nil, wrapOp(op, err)
			}
			s.Route = r
		}
		if a := s.Route.Bound.Addr(); FamilyOf(a) != s.Route.Family || a.Is4In6() {
			return nil, wrapOp(op, fmt.Errorf("%w: %v bound on an %s route", ErrFamilyUnsupported, a, s.Route.Family))
		}
		out[i] = s
	}
	return out, nil
}

// open binds specs, under a reservation of len(specs) made by the caller,
// with the call's policy (see ListenOption).
func (d *Daemon) open(ctx context.Context, op string, specs []Specific, pol policy) ([]*Pipe, error) {
	bestEffort := pol.bestEffort
	cfg, err := d.callConfig(pol)
	if err != nil {
		return nil, wrapOp(op, err)
	}

	res := make([]bound, len(specs))
	defer func() {
		var claimed []listenKey // the fixed ports this call claimed
		for i := range res {
			if res[i].claimed {
				claimed = append(claimed, keyOf(specs[i], specs[i].Route.Bound.Port()))
			}
		}
		d.mu.Lock()
		d.unclaimLocked(claimed)
		d.mu.Unlock()
	}()
	abort := d.bindAll(ctx, op, specs, cfg, res)
	opened := make([]*Pipe, 0, len(specs))
	openedSpecs := make([]Specific, 0, len(specs))
	var failed []*BindError
	for i, r := range res {
		switch {
		case r.p != nil:
			opened = append(opened, r.p)
			openedSpecs = append(openedSpecs, specs[i])
		case r.err != nil:
			failed = append(failed, r.err)
		}
	}
	if abort != nil {
		closeAll(opened)
		return nil, abort
	}
	var lerr *ListenError
	if len(failed) > 0 {
		lerr = &ListenError{Op: op, Tried: len(specs), Failed: failed, Closed: !bestEffort || len(opened) == 0}
		if lerr.Closed {
			closeAll(opened)
			return nil, lerr
		}
		// Best effort: the failures are returned with the listeners kept,
		// not logged as well.
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		closeAll(opened)
		return nil, wrapOp(op, ErrDaemonClosed)
	}
	keys := make([]listenKey, len(opened))
	for i, p := range opened {
		keys[i] = keyOf(openedSpecs[i], p.LocalAddr().Port())
	}
	d.registerLocked(opened, keys, pol)
	d.mu.Unlock()
	if lerr != nil {
		return opened, lerr
	}
	return opened, nil
}

// registerLocked adds listeners that a call opened to the daemon's tables
// (with d.mu held), and starts the address watcher with the first ones.
func (d *Daemon) registerLocked(pipes []*Pipe, keys []listenKey, pol policy) {
	if len(pipes) == 0 {
		return
	}
	if d.listeners == nil { // sized for the first call, the biggest often
		d.listeners = make(map[listenKey]*Pipe, len(pipes))
	}
	if d.keys == nil {
		d.keys = make(map[*Pipe]listenKey, len(pipes))
	}
	if d.watch == nil && d.WatchInterval >= 0 {
		d.watch = startWatch(d, cmp.Or(d.WatchInterval, DefaultWatchInterval))
	}
	cb := d.msgCB()
	for i, p := range pipes {
		d.listeners[keys[i]], d.keys[p] = p, keys[i]
		if pol.ownCB {
			if d.ownCB == nil {
				d.ownCB = make(map[*Pipe]bool)
			}
			d.ownCB[p] = true
		} else {
			p.SetOnMsg(cb) // in case SetOnMsg ran while the call was binding
		}
	}
}

func (d *Daemon) has(k listenKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.listeners[k]
	return ok
}

// bound is what binding one Specific gave: a pipe, or why not.
type bound struct {
	p       *Pipe
	err     *BindError
	claimed bool // its fixed port was claimed by this call
}

// pipelineAfter is the fewest binds of a call that bindAll hands on to a
// second goroutine.
const pipelineAfter = 512

// bindAll binds specs into res (same index), and returns a non-nil error
// if the call must stop: its context ended or the daemon closed; res then
// holds what was bound before, for the caller to close.
//
// The sockets are made one after another on the calling goroutine, in
// order, so that a thread that entered a network namespace gets them
// there, and of two specs that refuse each other the later fails. For a
// call of many, on more than one CPU, a second goroutine makes the pipes
// of the bound sockets and parks (an epoll_ctl) or starts them, while the
// caller binds the next.
func (d *Daemon) bindAll(ctx context.Context, op string, specs []Specific, cfg *PipeConfig, res []bound) error {
	if len(specs) < pipelineAfter || runtime.GOMAXPROCS(0) < 2 {
		for i := range specs {
			s, err := d.bindOne(ctx, op, specs[i], cfg, &res[i])
			if err != nil {
				return err
			}
			if s != nil {
				res[i].p = s.pipe(cfg)
				res[i].p.run()
			}
		}
		return nil
	}
	type handoff struct {
		r *bound
		s *serverSocket
		p *Pipe
	}
	next := make(chan handoff, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for h := range next {
			if h.p == nil {
				h.p = h.s.pipe(cfg)
			}
			h.p.run()
			h.r.p = h.p
		}
	}()
	var abort error
	for i := range specs {
		var s *serverSocket
		if s, abort = d.bindOne(ctx, op, specs[i], cfg, &res[i]); abort != nil {
			break
		}
		if s != nil {
			h := handoff{r: &res[i], s: s}
			if !s.anyThread() {
				h.p = s.pipe(cfg)
			}
			next <- h
		}
	}
	close(next)
	<-done // every pipe made and running (or parked) before any is closed
	return abort
}

// bindOne binds s's socket and returns it, or records in r why not; a
// non-nil error says that the call must stop (see bindAll).
func (d *Daemon) bindOne(ctx context.Context, op string, s Specific, cfg *PipeConfig, r *bound) (*serverSocket, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrapOp(op, err)
	}
	if d.isClosed() {
		return nil, wrapOp(op, ErrDaemonClosed)
	}
	if port := s.Route.Bound.Port(); port != 0 {
		if !d.claim(keyOf(s, port)) {
			r.err = &BindError{Family: s.Route.Family, Proto: s.Proto, Addr: s.Route.Bound,
				Err: fmt.Errorf("%w: the daemon already listens there", ErrAddrInUse)}
			return nil, nil
		}
		r.claimed = true
	}
	sock, err := bindSocket(ctx, s.Proto, s.Route, cfg)
	if err != nil {
		var be *BindError
		if !errors.As(err, &be) {
			be = &BindError{Family: s.Route.Family, Proto: s.Proto, Addr: s.Route.Bound, Err: err}
		}
		r.err = be
		return nil, nil
	}
	return &sock, nil
}
