package p2pd

import (
	"errors"
	"slices"
)

// AddPipe links p to other: every message received on p (on a TCP server,
// on any of its connections) is sent on with other.Send(msg, zero), to
// other's peer, after subscriptions got it and before the MsgCB runs. Two
// calls make a relay: a.AddPipe(b) and b.AddPipe(a). Linking both ways does
// not loop, because only received messages are forwarded, never sent ones.
//
// other must have a peer (a client pipe or a connection's pipe): a server
// pipe, p itself, or p's own peer in this process (which would bounce each
// message back forever) is refused with an error wrapping ErrInvalid; a
// closed other with ErrPipeClosed.
// Forwarding runs on p's reading goroutine, so a slow other slows p (TCP
// back-pressure). A failed forward (peer gone) is logged at debug level
// and the message is dropped for other. When other has closed, the first
// forward that meets it drops the link (as DelPipe would), so an ended
// pipe is neither written to again nor kept by p; Links never lists it.
func (p *Pipe) AddPipe(other *Pipe) error {
	switch {
	case other == nil || other == p:
		return errorf("p2pd: add pipe: %w: nil or the pipe itself", ErrInvalid)
	case other.server:
		return errorf("p2pd: add pipe: %w: a server pipe has no peer to forward to", ErrInvalid)
	case p.proto == other.proto && other.remote == p.local && other.local == p.remote && p.remote.IsValid():
		return errorf("p2pd: add pipe: %w: the pipes are the two ends of one conversation", ErrInvalid)
	case other.closed.Load():
		return errorf("p2pd: add pipe: the linked pipe: %w", ErrPipeClosed)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return ErrPipeClosed
	}
	var list []*Pipe
	if old := p.links.Load(); old != nil {
		if slices.Contains(*old, other) {
			return nil
		}
		list = slices.DeleteFunc(slices.Clone(*old), linkEnded) // prune while here
	}
	list = append(list, other)
	p.links.Store(&list)
	return nil
}

// DelPipe undoes AddPipe(other). Messages being forwarded may still reach
// other.
func (p *Pipe) DelPipe(other *Pipe) {
	p.dropLinks(func(x *Pipe) bool { return x == other })
}

// dropLinks removes the links that drop reports, if any. The list is
// copied on write under p.mu, so forwards in progress (which read it
// without the lock) keep a consistent one.
func (p *Pipe) dropLinks(drop func(*Pipe) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.links.Load()
	if old == nil || !slices.ContainsFunc(*old, drop) {
		return
	}
	list := slices.DeleteFunc(slices.Clone(*old), drop)
	if len(list) == 0 {
		p.links.Store(nil)
	} else {
		p.links.Store(&list)
	}
}

// linkEnded reports a linked pipe that has closed: it can never be
// forwarded to again.
func linkEnded(o *Pipe) bool { return o.closed.Load() }

// Links returns the pipes p forwards to, without those that have closed.
func (p *Pipe) Links() []*Pipe {
	if l := p.links.Load(); l != nil {
		return slices.DeleteFunc(slices.Clone(*l), linkEnded)
	}
	return nil
}

// forward sends msg, received on p, to links: p's own or, on a TCP
// connection, its server's. A link whose pipe has closed is dropped from
// both (DelPipe is a no-op where it is not): the owner does not keep a
// registry of who links to it, the forwarder notices instead, on the
// goroutine that already has the message.
func (p *Pipe) forward(links []*Pipe, msg []byte) {
	for _, o := range links {
		err := o.Send(msg, Peer{})
		switch {
		case err == nil:
		case errors.Is(err, ErrPipeClosed):
			p.cfg.logger().Debug("p2pd: linked pipe closed: link dropped", "from", p.local, "to", o.remote)
			p.DelPipe(o)
			if par := p.parent; par != nil {
				par.DelPipe(o)
			}
		default:
			p.cfg.logger().Debug("p2pd: forward to linked pipe failed", "from", p.local, "to", o.remote, "err", err)
		}
	}
}
