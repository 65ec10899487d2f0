package p2pd

import (
	"bytes"
	"context"
	"net/netip"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
)

// Msg is a message taken from a subscription. Data belongs to the
// receiver.
type Msg struct {
	Data []byte
	From Peer  // the sender, and where it arrived: answer with Pipe.Send(reply, From)
	Pipe *Pipe // the pipe it arrived on (for a TCP server: the connection's pipe)
}

// Sub is a subscription: a bounded queue of the messages of one pipe that
// match a pattern and a sender. Make one with [Pipe.Subscribe], read it
// with [Pipe.Recv].
type Sub struct {
	p       *Pipe
	re      *regexp.Regexp // nil: any message
	from    netip.AddrPort // invalid: any sender
	ch      chan Msg
	dropped atomic.Uint64
	gone    chan struct{}
	once    sync.Once
}

// Dropped returns how many matching messages were discarded because the
// queue was full.
func (s *Sub) Dropped() uint64 { return s.dropped.Load() }

// Len returns the number of queued messages.
func (s *Sub) Len() int { return len(s.ch) }

// Subscribe makes a queue of the messages received on p that match the
// regular expression pattern (RE2 syntax, unanchored, applied to the raw
// bytes; "" matches all) and come from the sender from. The zero from
// matches any sender; an address with port 0 matches any port of that
// address; otherwise the address and port must be equal (IPv4-mapped
// addresses are unmapped; a zone-less address matches any zone). So a
// filter for port 4209 never matches port 42090. Subscribe("", zero) is
// the catch-all subscription.
//
// On a TCP server pipe a subscription sees the messages of every
// connection; on a connection's pipe, that connection's only. Subscriptions
// cost nothing while no message matches; a matching message is copied.
//
// The queue holds PipeConfig.QueueSize messages. When it is full, new
// matching messages are dropped for this subscription (others still get
// them) and counted by [Sub.Dropped]: a flood cannot exhaust memory, and
// the reader is never blocked behind a slow subscriber.
func (p *Pipe) Subscribe(pattern string, from netip.AddrPort) (*Sub, error) {
	s := &Sub{p: p, from: unmap(from), ch: make(chan Msg, p.cfg.queueSize()), gone: make(chan struct{})}
	if pattern != "" {
		re, err := regexp.Compile(pattern)
		if err != nil {
			return nil, errorf("p2pd: subscribe: %w: %w", ErrInvalid, err)
		}
		s.re = re
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return nil, ErrPipeClosed
	}
	var list []*Sub
	if old := p.subs.Load(); old != nil {
		list = slices.Clone(*old)
	}
	list = append(list, s)
	p.subs.Store(&list)
	return s, nil
}

// Unsubscribe removes s from p. Recv calls waiting on it return an error
// wrapping ErrInvalid; queued messages are discarded.
func (p *Pipe) Unsubscribe(s *Sub) {
	if s == nil || s.p != p {
		return
	}
	p.mu.Lock()
	if old := p.subs.Load(); old != nil {
		list := slices.DeleteFunc(slices.Clone(*old), func(x *Sub) bool { return x == s })
		if len(list) == 0 {
			p.subs.Store(nil)
		} else {
			p.subs.Store(&list)
		}
	}
	p.mu.Unlock()
	s.once.Do(func() { close(s.gone) })
}

// Recv returns the next message of subscription s, waiting for one until
// ctx ends (ctx.Err()) or the pipe closes (ErrPipeClosed). Messages queued
// before the close are still returned first. Several goroutines may Recv
// on one subscription; each message goes to one of them.
func (p *Pipe) Recv(ctx context.Context, s *Sub) (Msg, error) {
	if s == nil || s.p != p {
		return Msg{}, errorf("p2pd: recv: %w: subscription of another pipe", ErrInvalid)
	}
	select {
	case m := <-s.ch:
		return m, nil
	default:
	}
	select {
	case m := <-s.ch:
		return m, nil
	case <-ctx.Done():
		return Msg{}, ctx.Err()
	case <-p.quit.wait():
		return Msg{}, ErrPipeClosed
	case <-s.gone:
		return Msg{}, errorf("p2pd: recv: %w: unsubscribed", ErrInvalid)
	}
}

// match reports whether s wants a message.
func (s *Sub) match(msg []byte, from Peer) bool {
	if s.from.IsValid() {
		a := from.Addr()
		if s.from.Addr().Zone() == "" {
			a = a.WithZone("")
		}
		if a != s.from.Addr() || (s.from.Port() != 0 && s.from.Port() != from.Port()) {
			return false
		}
	}
	return s.re == nil || s.re.Match(msg)
}

func deliverSubs(subs []*Sub, msg []byte, from Peer, p *Pipe) {
	var data []byte // one copy shared by every matching subscription
	for _, s := range subs {
		if !s.match(msg, from) {
			continue
		}
		if data == nil {
			data = bytes.Clone(msg)
			if data == nil {
				data = []byte{}
			}
		}
		select {
		case s.ch <- Msg{Data: data, From: from, Pipe: p}:
		default:
			s.dropped.Add(1)
			s.p.stats.subDropped.Add(1) // the pipe's counter outlives the subscription
		}
	}
}

// tap is one Intercept function.
type tap struct {
	fn func(msg []byte, from Peer) bool
}

// Intercept makes fn see each message p receives before its
// subscriptions, links and callback do; when fn returns true the message
// is taken and goes no further. It is for a protocol that shares a socket
// with the user's messages: a STUN client on a UDP listener takes the
// answers to its own requests (see package github.com/p2pd/p2pd/reach).
// fn runs on the pipe's reader (on every socket's reader, concurrently,
// for a pipe of several: PipeConfig.Sockets), so it must not block; msg is
// valid only until it returns. Intercept on a TCP server pipe sees no
// messages (its connections have their own pipes). remove takes fn away;
// it may be called more than once.
func (p *Pipe) Intercept(fn func(msg []byte, from Peer) bool) (remove func(), err error) {
	if fn == nil {
		return nil, errorf("p2pd: intercept: %w: nil func", ErrInvalid)
	}
	t := &tap{fn: fn}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return nil, errorf("p2pd: intercept: %w", ErrPipeClosed)
	}
	var list []*tap
	if old := p.taps.Load(); old != nil {
		list = slices.Clone(*old)
	}
	list = append(list, t)
	p.taps.Store(&list)
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		old := p.taps.Load()
		if old == nil {
			return
		}
		list := slices.DeleteFunc(slices.Clone(*old), func(x *tap) bool { return x == t })
		if len(list) == 0 {
			p.taps.Store(nil)
			return
		}
		p.taps.Store(&list)
	}, nil
}

// intercepted runs the taps; a panicking one takes nothing.
func (p *Pipe) intercepted(taps []*tap, msg []byte, from Peer) bool {
	for _, t := range taps {
		if p.runTap(t, msg, from) {
			return true
		}
	}
	return false
}

func (p *Pipe) runTap(t *tap, msg []byte, from Peer) (taken bool) {
	defer func() {
		if r := recover(); r != nil {
			p.logPanic("Intercept", r)
			taken = false
		}
	}()
	return t.fn(msg, from)
}
