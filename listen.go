package p2pd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Server pipes: Listen binds a socket on a route; ServeListener and
// ServePacketConn (and a Daemon's Adopt) serve a socket bound elsewhere.

// Listen opens a server pipe on r.Bound; an unbound route is bound first
// with r.Bind("", 0). Port 0 lets the system choose: see [Pipe.LocalAddr].
// A link-local IPv6 address binds with its zone. For TCP the pipe accepts
// connections, each a pipe of its own; for UDP it receives datagrams from
// anyone. ctx bounds the bind only. Errors are *BindError; one for an
// address in use wraps ErrAddrInUse and the system error.
func Listen(ctx context.Context, proto Proto, r Route, c *PipeConfig) (*Pipe, error) {
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: err}
	}
	return listenShared(ctx, proto, r, cfg)
}

// listenShared is Listen with a config already copied, which the pipe may share
// with others (a Daemon shares one per call).
func listenShared(ctx context.Context, proto Proto, r Route, cfg *PipeConfig) (*Pipe, error) {
	var err error
	if proto != TCP && proto != UDP {
		return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: fmt.Errorf("%w: protocol %v", ErrInvalid, proto)}
	}
	if r.Family != AnyFamily {
		if err := r.checkFamily(); err != nil {
			return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: err}
		}
	}
	if !r.IsBound() {
		b, err := r.Bind("", 0)
		if err != nil {
			return nil, &BindError{Family: r.Family, Proto: proto, Err: err}
		}
		r = b
	}
	fam := FamilyOf(r.Bound.Addr())
	if r.Family != AnyFamily && r.Family != fam {
		return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: fmt.Errorf("%w: %v on an %v route", ErrFamilyUnsupported, r.Bound.Addr(), r.Family)}
	}
	var lc net.ListenConfig
	if cfg.ListenConfig != nil {
		lc = *cfg.ListenConfig
	}
	lc.Control = cfg.control(proto, lc.Control)
	sa, err := resolveZone(r.Bound)
	if err != nil {
		return nil, &BindError{Family: fam, Proto: proto, Addr: r.Bound, Err: err}
	}
	network, addr := proto.network(fam), sa.String()
	var p *Pipe
	if proto == TCP {
		ln, err := lc.Listen(ctx, network, addr)
		if err != nil && cfg.waitForAddr(ctx, r.Bound.Addr(), err) {
			ln, err = lc.Listen(ctx, network, addr)
		}
		if err != nil {
			return nil, cfg.bindError(fam, proto, r.Bound, err)
		}
		p = newPipe(cfg, TCP, true, nil)
		p.ln = ln
	} else {
		pc, err := lc.ListenPacket(ctx, network, addr)
		if err != nil && cfg.waitForAddr(ctx, r.Bound.Addr(), err) {
			pc, err = lc.ListenPacket(ctx, network, addr)
		}
		if err != nil {
			return nil, cfg.bindError(fam, proto, r.Bound, err)
		}
		p = newPipe(cfg, UDP, true, nil)
		p.setPacketConn(pc)
	}
	p.local = netip.AddrPortFrom(r.Bound.Addr(), p.localFromSocket().Port())
	r.Bound = p.local
	p.route = r
	if p.udp != nil {
		p.initBatchBound(fam, sa)
	}
	p.start()
	return p, nil
}

// ServeListener serves an already bound TCP listener (systemd socket
// activation, tableflip, a socket made with other options) as a server
// pipe. The pipe owns l: Close closes it.
func ServeListener(l net.Listener, c *PipeConfig) (*Pipe, error) {
	if l == nil {
		return nil, fmt.Errorf("p2pd: ServeListener: %w: nil listener", ErrInvalid)
	}
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, err
	}
	p := newPipe(cfg, TCP, true, nil)
	p.ln = l
	p.local = p.localFromSocket()
	p.route = Route{Family: FamilyOf(p.local.Addr()), Bound: p.local}
	p.start()
	return p, nil
}

// ServePacketConn serves an already bound UDP socket as a server pipe. A
// *net.UDPConn takes the allocation-free path. The pipe owns pc: Close
// closes it.
func ServePacketConn(pc net.PacketConn, c *PipeConfig) (*Pipe, error) {
	if pc == nil {
		return nil, fmt.Errorf("p2pd: ServePacketConn: %w: nil PacketConn", ErrInvalid)
	}
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, err
	}
	p := newPipe(cfg, UDP, true, nil)
	p.setPacketConn(pc)
	p.local = p.localFromSocket()
	p.route = Route{Family: FamilyOf(p.local.Addr()), Bound: p.local}
	p.start()
	return p, nil
}

func (p *Pipe) setPacketConn(pc net.PacketConn) {
	if u, ok := pc.(*net.UDPConn); ok {
		p.udp = u
	} else {
		p.pc = pc
	}
}

func (p *Pipe) localFromSocket() netip.AddrPort {
	switch {
	case p.ln != nil:
		return addrPortOf(p.ln.Addr())
	case p.udp != nil:
		return addrPortOf(p.udp.LocalAddr())
	case p.pc != nil:
		return addrPortOf(p.pc.LocalAddr())
	case p.conn != nil:
		return addrPortOf(p.conn.LocalAddr())
	}
	return netip.AddrPort{}
}
