package p2pd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// Client pipes: Dial.

// Dial opens a client pipe to host and port through route r.
//
// The local address is taken as Listen takes it: r.Bound if r is bound,
// else r's default address (r.Bind("", 0): its first NIC IP) with port 0.
// A route with no address, the zero Route included, lets the system choose
// the local address, as net.Dial does: its routing table gives the one
// that reaches host, in r's family if r has one. Listen refuses such a
// route, for a server must be found where it is looked for; a client need
// not.
//
// host is an IP literal (a link-local IPv6 one with its zone,
// "fe80::1%eth0") or a name resolved in r's family (both families for
// AnyFamily). port 0 is refused. ctx and PipeConfig.ConnectTimeout bound
// resolving, connecting and the TLS handshake. Errors are *DialError (a
// nil ctx too: it wraps ErrInvalid); one for a local address in use wraps
// ErrAddrInUse and the system error.
//
// A UDP client pipe whose peer answers with ICMP port unreachable (nothing
// listens there) ends: its Err and OnEnd's reason wrap
// syscall.ECONNREFUSED, as a connected net.UDPConn's Read reports it.
func Dial(ctx context.Context, proto Proto, r Route, host string, port uint16, c *PipeConfig) (*Pipe, error) {
	var laddr netip.AddrPort
	fail := func(err error) (*Pipe, error) {
		return nil, &DialError{Proto: proto, Host: host, Port: port, Local: laddr, Err: err}
	}
	if ctx == nil {
		return fail(errNilContext)
	}
	cfg, err := copyConfig(c)
	if err != nil {
		return fail(err)
	}
	if proto != TCP && proto != UDP {
		return fail(fmt.Errorf("%w: protocol %v", ErrInvalid, proto))
	}
	if port == 0 {
		return fail(fmt.Errorf("%w: port 0", ErrInvalid))
	}
	fam := r.Family
	switch b, err := r.bound(); {
	case err == nil:
		r, laddr, fam = b, b.Bound, FamilyOf(b.Bound.Addr())
	case !errors.Is(err, ErrNoAddress):
		return fail(err)
	}
	ip, err := netip.ParseAddr(host)
	isIP := err == nil
	if isIP {
		if fam == IPv4 {
			ip = ip.Unmap()
		}
		if fam != AnyFamily && FamilyOf(ip) != fam {
			return fail(fmt.Errorf("%w: %v host on an %v route", ErrFamilyUnsupported, FamilyOf(ip), fam))
		}
		fam = FamilyOf(ip)
	}
	network := "tcp"
	if proto == UDP {
		network = "udp"
	}
	if fam != AnyFamily {
		network = proto.network(fam)
	}
	var d net.Dialer
	if cfg.Dialer != nil {
		d = *cfg.Dialer
	}
	d.LocalAddr = nil
	if laddr.IsValid() {
		sa, err := resolveZone(laddr)
		if err != nil {
			return fail(err)
		}
		if proto == TCP {
			d.LocalAddr = net.TCPAddrFromAddrPort(sa)
		} else {
			d.LocalAddr = net.UDPAddrFromAddrPort(sa)
		}
	}
	dialAddr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	if isIP && ip.Zone() != "" {
		sa, err := resolveZone(netip.AddrPortFrom(ip, port))
		if err != nil {
			return fail(err)
		}
		dialAddr = sa.String()
	}
	if d.ControlContext != nil {
		user := d.ControlContext
		if ctl := cfg.control(proto, nil); ctl != nil {
			d.ControlContext = func(ctx context.Context, network, address string, rc syscall.RawConn) error {
				if err := ctl(network, address, rc); err != nil {
					return err
				}
				return user(ctx, network, address, rc)
			}
		}
	} else {
		d.Control = cfg.control(proto, d.Control)
	}
	if t := cfg.connectTimeout(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	conn, err := d.DialContext(ctx, network, dialAddr)
	if err != nil {
		return fail(sysError(err))
	}
	p := newPipe(cfg, proto, false, nil)
	if proto == UDP {
		p.udp = conn.(*net.UDPConn)
	} else {
		cfg.setLinger(conn)
		if cfg.TLS != nil {
			tc := cfg.TLS.Clone()
			if tc.ServerName == "" {
				tc.ServerName = host
				if isIP {
					tc.ServerName = ip.WithZone("").String()
				}
			}
			tconn := tls.Client(conn, tc)
			if err := tconn.HandshakeContext(ctx); err != nil {
				conn.Close()
				return fail(fmt.Errorf("TLS handshake: %w", err))
			}
			conn = tconn
		} else if haveRawRead {
			if tcp, ok := conn.(*net.TCPConn); ok {
				p.rc, _ = tcp.SyscallConn()
			}
		}
		p.conn = conn
	}
	p.local = addrPortOf(conn.LocalAddr())
	p.remote = addrPortOf(conn.RemoteAddr())
	if r.Family == AnyFamily && len(r.NIC) == 0 {
		r = Route{Family: FamilyOf(p.local.Addr())}
	}
	if laddr.IsValid() && laddr.Addr().Zone() != "" {
		p.local = netip.AddrPortFrom(laddr.Addr(), p.local.Port())
	}
	r.Bound = p.local
	p.route = r
	p.start()
	return p, nil
}
