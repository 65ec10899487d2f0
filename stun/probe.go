package stun

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	pion "github.com/pion/stun/v3"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"
)

// Probe asks the servers of p's family which address they see for the UDP
// listener p, through p's own socket: the answer is the NAT's mapping of
// the listener itself, its external IP and port, which a peer elsewhere can
// send to. Servers are asked one after the other until Agree of them have
// answered (see [Resolver]); they must report the same address and port,
// else the NAT maps the listener differently for each destination
// (address-dependent mapping) and there is no one address to give.
//
// Each server is asked as ProbeServer does.
func (r *Resolver) Probe(ctx context.Context, p *p2pd.Pipe) (netip.AddrPort, error) {
	if ctx == nil || p == nil {
		return r.ProbeServer(ctx, p, netip.AddrPort{})
	}
	f := p2pd.FamilyOf(p.LocalAddr().Addr())
	servers := r.servers(ctx, f)
	agree := r.Agree
	if agree <= 0 {
		agree = min(2, len(servers))
	}
	var got []netip.AddrPort
	var errs []error
	for _, s := range servers {
		if len(got) == agree {
			break
		}
		if s.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, s.err))
			continue
		}
		m, err := r.ProbeServer(ctx, p, s.addr)
		if err != nil {
			if ctx.Err() != nil {
				return netip.AddrPort{}, err
			}
			errs = append(errs, err)
			continue
		}
		got = append(got, m)
	}
	switch {
	case len(servers) == 0:
		return netip.AddrPort{}, errtext.Errorf("p2pd: stun: probe from %v: %w: no %v STUN server configured", p.LocalAddr(), p2pd.ErrExtUnknown, f)
	case len(got) < agree || agree == 0:
		return netip.AddrPort{}, errtext.Errorf("p2pd: stun: probe from %v: %w: %d of %d servers answered: %w", p.LocalAddr(), p2pd.ErrExtUnknown, len(got), agree, errors.Join(errs...))
	}
	for _, m := range got[1:] {
		if m != got[0] {
			return netip.AddrPort{}, errtext.Errorf("p2pd: stun: probe from %v: %w: servers see %v and %v (the NAT maps per destination)", p.LocalAddr(), p2pd.ErrExtUnknown, got[0], m)
		}
	}
	return got[0], nil
}

// ProbeServer asks server which address it sees for the UDP listener p,
// through p's own socket.
//
// The answer is taken out before p's subscriptions and callback see it
// (see [p2pd.Pipe.Intercept]): only a Binding response from server with
// the transaction ID of this request is. Anything else, a forged "answer"
// with another transaction ID included, is an ordinary datagram for the
// callback. Retransmissions and the bound of the call follow the
// Resolver's RTO, Retries and Timeout; nothing is cached.
func (r *Resolver) ProbeServer(ctx context.Context, p *p2pd.Pipe, server netip.AddrPort) (netip.AddrPort, error) {
	fail := func(err error) (netip.AddrPort, error) {
		return netip.AddrPort{}, errtext.Errorf("p2pd: stun: probe from %v via %v: %w", listenerAddr(p), server, err)
	}
	switch {
	case ctx == nil:
		return fail(errtext.Errorf("%w: nil context", p2pd.ErrInvalid))
	case p == nil || p.Proto() != p2pd.UDP || !p.IsServer():
		return fail(errtext.Errorf("%w: not a UDP listener", p2pd.ErrInvalid))
	case !server.IsValid() || server.Port() == 0:
		return fail(errtext.Errorf("%w: server address", p2pd.ErrInvalid))
	}
	server = stunUnmap(server)
	req, err := newBinding(nil)
	if err != nil {
		return fail(err)
	}
	t := &pipeTransport{p: p, to: server, ch: make(chan answer, 4)}
	remove, err := p.Intercept(t.take(req.TransactionID))
	if err != nil {
		return fail(err)
	}
	defer remove()
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	t.ctx = ctx
	m, _, err := r.transact(ctx, t, req, func(src netip.AddrPort) bool { return src == server })
	if err != nil {
		return fail(err)
	}
	mapped, err := mappedAddr(m)
	if err != nil {
		return fail(err)
	}
	return mapped, nil
}

func listenerAddr(p *p2pd.Pipe) any {
	if p == nil {
		return "<nil>"
	}
	return p.LocalAddr()
}

// answer is a datagram a pipeTransport's tap took.
type answer struct {
	b    []byte
	from netip.AddrPort
}

// pipeTransport sends from a listener's socket and receives what its tap
// takes from the listener's reader.
type pipeTransport struct {
	ctx context.Context
	p   *p2pd.Pipe
	to  netip.AddrPort
	ch  chan answer
}

// magicCookie is RFC 5389's fixed header field.
const magicCookie = 0x2112A442

// take returns the tap: it takes a STUN message with transaction ID id from
// t.to, a copy of it queued for recv (a full queue drops it, as the wire
// may). It allocates only for such a message.
func (t *pipeTransport) take(id [pion.TransactionIDSize]byte) func([]byte, p2pd.Peer) bool {
	return func(b []byte, from p2pd.Peer) bool {
		if len(b) < 20 || binary.BigEndian.Uint32(b[4:8]) != magicCookie || !bytes.Equal(b[8:20], id[:]) ||
			stunUnmap(from.AddrPort).Addr().WithZone("") != t.to.Addr().WithZone("") || from.Port() != t.to.Port() {
			return false
		}
		select {
		case t.ch <- answer{b: bytes.Clone(b), from: from.AddrPort}:
		default:
		}
		return true
	}
}

func (t *pipeTransport) send(raw []byte) error {
	return t.p.Send(raw, p2pd.Peer{AddrPort: t.to})
}

func (t *pipeTransport) recv(until time.Time) ([]byte, netip.AddrPort, error) {
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	select {
	case a := <-t.ch:
		return a.b, a.from, nil
	case <-timer.C:
		return nil, netip.AddrPort{}, errProbeWait
	case <-t.ctx.Done():
		return nil, netip.AddrPort{}, t.ctx.Err()
	case <-t.p.Done():
		return nil, netip.AddrPort{}, p2pd.ErrPipeClosed
	}
}

// errProbeWait ends one wait of a probe: a timeout, as a socket's.
var errProbeWait error = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "no answer yet" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
