package p2pd

import (
	"fmt"
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
// message back forever) is refused with an error wrapping ErrInvalid.
// Forwarding runs on p's reading goroutine, so a slow other slows p (TCP
// back-pressure). A failed forward (other closed, peer gone) is logged at
// debug level and the message is dropped for other.
func (p *Pipe) AddPipe(other *Pipe) error {
	switch {
	case other == nil || other == p:
		return fmt.Errorf("p2pd: add pipe: %w: nil or the pipe itself", ErrInvalid)
	case other.server:
		return fmt.Errorf("p2pd: add pipe: %w: a server pipe has no peer to forward to", ErrInvalid)
	case p.proto == other.proto && other.remote == p.local && other.local == p.remote && p.remote.IsValid():
		return fmt.Errorf("p2pd: add pipe: %w: the pipes are the two ends of one conversation", ErrInvalid)
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
		list = slices.Clone(*old)
	}
	list = append(list, other)
	p.links.Store(&list)
	return nil
}

// DelPipe undoes AddPipe(other). Messages being forwarded may still reach
// other.
func (p *Pipe) DelPipe(other *Pipe) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.links.Load()
	if old == nil {
		return
	}
	list := slices.DeleteFunc(slices.Clone(*old), func(x *Pipe) bool { return x == other })
	if len(list) == 0 {
		p.links.Store(nil)
	} else {
		p.links.Store(&list)
	}
}

// Links returns the pipes p forwards to.
func (p *Pipe) Links() []*Pipe {
	if l := p.links.Load(); l != nil {
		return slices.Clone(*l)
	}
	return nil
}

func (p *Pipe) forward(links []*Pipe, msg []byte) {
	for _, o := range links {
		if err := o.Send(msg, Peer{}); err != nil {
			p.cfg.logger().Debug("p2pd: forward to linked pipe failed", "from", p.local, "to", o.remote, "err", err)
		}
	}
}
