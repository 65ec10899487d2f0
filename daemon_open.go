package p2pd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
)

// How a call opens listeners: it reserves room under the guard, claims the
// keys it binds, binds them one after another, and registers what it
// opened, or closes it all again (all or nothing).

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

	opened := make([]*Pipe, 0, len(specs))
	openedSpecs := make([]Specific, 0, len(specs))
	var claimed []listenKey // fixed ports this call binds
	defer func() {
		d.mu.Lock()
		d.unclaimLocked(claimed)
		d.mu.Unlock()
	}()
	var failed []*BindError
	var abort error
	for _, s := range specs {
		if err := ctx.Err(); err != nil {
			abort = wrapOp(op, err)
			break
		}
		if d.isClosed() {
			abort = wrapOp(op, ErrDaemonClosed)
			break
		}
		be := &BindError{Family: s.Route.Family, Proto: s.Proto, Addr: s.Route.Bound}
		if port := s.Route.Bound.Port(); port != 0 {
			k := keyOf(s, port)
			if !d.claim(k) {
				be.Err = fmt.Errorf("%w: the daemon already listens there", ErrAddrInUse)
				failed = append(failed, be)
				continue
			}
			claimed = append(claimed, k)
		}
		p, err := listenShared(ctx, s.Proto, s.Route, cfg)
		if err != nil {
			if !errors.As(err, &be) {
				be.Err = err
			}
			failed = append(failed, be)
			continue
		}
		opened = append(opened, p)
		openedSpecs = append(openedSpecs, s)
	}
	closeAll := func() {
		for _, p := range opened {
			p.Close()
		}
	}
	if abort != nil {
		closeAll()
		return nil, abort
	}
	var lerr *ListenError
	if len(failed) > 0 {
		lerr = &ListenError{Op: op, Tried: len(specs), Failed: failed, Closed: !bestEffort || len(opened) == 0}
		if lerr.Closed {
			closeAll()
			return nil, lerr
		}
		// Best effort: the failures are returned with the listeners kept,
		// not logged as well.
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		closeAll()
		return nil, wrapOp(op, ErrDaemonClosed)
	}
	keys := make([]listenKey, len(opened))
	for i, p := range opened {
		keys[i] = keyOf(openedSpecs[i], p.LocalAddr().Port())
	}
	d.unclaimLocked(claimed)
	claimed = nil
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
	if d.listeners == nil {
		d.listeners = make(map[listenKey]*Pipe)
	}
	if d.keys == nil {
		d.keys = make(map[*Pipe]listenKey)
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
