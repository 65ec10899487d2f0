package p2pd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Server pipes: Listen binds a socket on a route; ServeListener and
// ServePacketConn (and a Daemon's Adopt) serve a socket bound elsewhere.

// Listen opens a server pipe on r. The address is r.Bound if r is bound,
// else r's default address (r.Bind("", 0): its first NIC IP, port 0), the
// local address Dial takes too. A route with no address, the zero Route
// included, is refused with an error wrapping ErrNoAddress: unlike a
// client, which the system may give any address that reaches its peer, a
// server must be where it is looked for, and is not put on every interface
// unasked (bind "*" for that, e.g. Route{Family: IPv4}.Bind("*", port)).
// Port 0 lets the system choose: see [Pipe.LocalAddr]. A link-local IPv6
// address binds with its zone. For TCP the pipe accepts connections, each
// a pipe of its own; for UDP it receives datagrams from anyone. ctx bounds
// the bind only. Errors are *BindError (a nil ctx too: it wraps
// ErrInvalid); one for an address in use wraps ErrAddrInUse and the system
// error.
func Listen(ctx context.Context, proto Proto, r Route, c *PipeConfig) (*Pipe, error) {
	if ctx == nil {
		return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: errNilContext}
	}
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: err}
	}
	return listenShared(ctx, proto, r, cfg)
}

// listenShared is Listen with a config already copied, which the pipe may share
// with others (a Daemon shares one per call).
func listenShared(ctx context.Context, proto Proto, r Route, cfg *PipeConfig) (*Pipe, error) {
	s, err := bindSocket(ctx, proto, r, cfg)
	if err != nil {
		return nil, err
	}
	p := s.pipe(cfg)
	p.run()
	return p, nil
}

// serverSocket is a server pipe's bound socket (or sockets), before the
// pipe is made.
type serverSocket struct {
	ln  net.Listener
	pc  net.PacketConn
	fan *fanout
	r   Route // bound
}

// bindSocket is the first step of listenShared: the system calls that
// depend on the calling thread (its network namespace), up to the bound
// socket.
func bindSocket(ctx context.Context, proto Proto, r Route, cfg *PipeConfig) (serverSocket, error) {
	if proto != TCP && proto != UDP {
		return serverSocket{}, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: fmt.Errorf("%w: protocol %v", ErrInvalid, proto)}
	}
	b, err := r.bound()
	if err != nil {
		return serverSocket{}, &BindError{Family: r.Family, Proto: proto, Addr: r.Bound, Err: err}
	}
	r = b
	fam := FamilyOf(r.Bound.Addr())
	var lc net.ListenConfig
	if cfg.ListenConfig != nil {
		lc = *cfg.ListenConfig
	}
	lc.Control = cfg.control(proto, lc.Control)
	sa, err := resolveZone(r.Bound)
	if err != nil {
		return serverSocket{}, &BindError{Family: fam, Proto: proto, Addr: r.Bound, Err: err}
	}
	network, addr := proto.network(fam), sa.String()
	s := serverSocket{r: r}
	n := cfg.sockets()
	bind := func() (err error) {
		switch {
		case n > 1:
			s.fan, err = bindFanout(ctx, lc, proto, network, addr, n)
			if err == nil {
				s.ln, s.pc = s.fan.socks[0].ln, s.fan.socks[0].packetConn()
			}
		case proto == TCP:
			s.ln, err = lc.Listen(ctx, network, addr)
		default:
			s.pc, err = lc.ListenPacket(ctx, network, addr)
		}
		return err
	}
	err = bind()
	if err != nil && cfg.waitForAddr(ctx, r.Bound.Addr(), err) {
		err = bind()
	}
	if err != nil {
		return serverSocket{}, cfg.bindError(fam, proto, r.Bound, err)
	}
	return s, nil
}

// pipe makes the server pipe of s, prepared (Pipe.prepare), neither
// parked nor running: the caller must call run. A wildcard socket's
// prepare names the interfaces of the calling thread's namespace (see
// setBatch), so it must run where s was bound; any other may run anywhere.
func (s serverSocket) pipe(cfg *PipeConfig) *Pipe {
	p := newServer(cfg, s.ln, s.pc, s.r)
	p.fan = s.fan
	p.prepare()
	return p
}

// anyThread reports whether s.pipe may run on another thread than the one
// that bound s.
func (s serverSocket) anyThread() bool { return !s.r.Bound.Addr().IsUnspecified() }

// ServeListener serves an already bound TCP listener (systemd socket
// activation, tableflip, a socket made with other options) as a server
// pipe. The pipe owns l: Close closes it.
func ServeListener(l net.Listener, c *PipeConfig) (*Pipe, error) {
	if l == nil {
		return nil, errorf("p2pd: ServeListener: %w: nil listener", ErrInvalid)
	}
	return serve(c, l, nil)
}

// ServePacketConn serves an already bound UDP socket as a server pipe. A
// *net.UDPConn takes the allocation-free path. The pipe owns pc: Close
// closes it.
func ServePacketConn(pc net.PacketConn, c *PipeConfig) (*Pipe, error) {
	if pc == nil {
		return nil, errorf("p2pd: ServePacketConn: %w: nil PacketConn", ErrInvalid)
	}
	return serve(c, nil, pc)
}

// serve is ServeListener and ServePacketConn past the nil check.
func serve(c *PipeConfig, ln net.Listener, pc net.PacketConn) (*Pipe, error) {
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, err
	}
	return servePipe(cfg, ln, pc, Route{}), nil
}

// servePipe makes a server pipe of a bound socket, ln for TCP or else pc
// for UDP, with a config already copied, and starts it: Listen,
// ServeListener, ServePacketConn and a Daemon's Adopt all serve through
// it. r is the route the socket was bound on, or the zero Route for a
// socket bound elsewhere (the pipe's route is then made of its address).
// The socket's port is the real one; the address keeps r's zone.
func servePipe(cfg *PipeConfig, ln net.Listener, pc net.PacketConn, r Route) *Pipe {
	p := newServer(cfg, ln, pc, r)
	p.start()
	return p
}

// newServer is servePipe without the start.
func newServer(cfg *PipeConfig, ln net.Listener, pc net.PacketConn, r Route) *Pipe {
	var p *Pipe
	if ln != nil {
		p = newPipe(cfg, TCP, true, nil)
		p.ln = ln
		if tl, ok := ln.(*net.TCPListener); ok && havePark {
			p.rc, _ = tl.SyscallConn() // for parking
		}
	} else {
		p = newPipe(cfg, UDP, true, nil)
		p.setPacketConn(pc)
	}
	p.local = p.localFromSocket()
	if r.IsBound() {
		p.local = netip.AddrPortFrom(r.Bound.Addr(), p.local.Port())
	} else {
		r = Route{Family: FamilyOf(p.local.Addr())}
	}
	r.Bound = p.local
	p.route = r
	return p
}

func (p *Pipe) setPacketConn(pc net.PacketConn) {
	if u, ok := pc.(*net.UDPConn); ok {
		p.udp = u
	} else {
		p.pc = pc
	}
}

// localFromSocket is a server pipe's address as its socket has it.
func (p *Pipe) localFromSocket() netip.AddrPort {
	switch {
	case p.ln != nil:
		return addrPortOf(p.ln.Addr())
	case p.udp != nil:
		return addrPortOf(p.udp.LocalAddr())
	case p.pc != nil:
		return addrPortOf(p.pc.LocalAddr())
	}
	return netip.AddrPort{}
}
