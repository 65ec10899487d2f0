package p2pd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// Client pipes: Dial.

// Dial opens a client pipe to host and port through route r. The local
// address is r.Bound if r is bound, else r.Addr() with port 0; a zero
// Route lets the system choose. host is an IP literal (a link-local IPv6
// one with its zone, "fe80::1%eth0") or a name resolved in r's family
// (both families for a zero Route). ctx and PipeConfig.ConnectTimeout
// bound resolving, connecting and the TLS handshake.
func Dial(ctx context.Context, proto Proto, r Route, host string, port uint16, c *PipeConfig) (*Pipe, error) {
	hostport := net.JoinHostPort(host, strconv.Itoa(int(port)))
	cfg, err := copyConfig(c)
	if err != nil {
		return nil, err
	}
	if proto != TCP && proto != UDP {
		return nil, fmt.Errorf("p2pd: dial %v %s: %w: protocol", proto, hostport, ErrInvalid)
	}
	fam := r.Family
	var laddr netip.AddrPort
	if r.IsBound() {
		laddr = r.Bound
	} else if a := r.Addr(); a.IsValid() {
		laddr = netip.AddrPortFrom(a, 0)
	}
	if fam == AnyFamily && laddr.IsValid() {
		fam = FamilyOf(laddr.Addr())
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if fam == IPv4 {
			ip = ip.Unmap()
		}
		if fam != AnyFamily && FamilyOf(ip) != fam {
			return nil, fmt.Errorf("p2pd: dial %v %s: %w: %v route", proto, hostport, ErrFamilyUnsupported, fam)
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
			return nil, fmt.Errorf("p2pd: dial %v %s from %v: %w", proto, hostport, laddr, err)
		}
		if proto == TCP {
			d.LocalAddr = net.TCPAddrFromAddrPort(sa)
		} else {
			d.LocalAddr = net.UDPAddrFromAddrPort(sa)
		}
	}
	dialAddr := hostport
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() != "" {
		sa, err := resolveZone(netip.AddrPortFrom(ip, port))
		if err != nil {
			return nil, fmt.Errorf("p2pd: dial %v %s: %w", proto, hostport, err)
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
		if isAddrInUse(err) {
			return nil, newBindError(fam, proto, laddr, err)
		}
		return nil, fmt.Errorf("p2pd: dial %v %s: %w", proto, hostport, err)
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
				if ip, err := netip.ParseAddr(host); err == nil {
					tc.ServerName = ip.WithZone("").String()
				}
			}
			tconn := tls.Client(conn, tc)
			if err := tconn.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, fmt.Errorf("p2pd: dial %v %s: TLS handshake: %w", proto, hostport, err)
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
