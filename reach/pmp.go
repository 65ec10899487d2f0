package reach

// NAT-PMP (RFC 6886), and the UDP transport it shares with PCP (RFC 6887):
// both ask the gateway's port 5351, from a socket made for the call and
// closed before it returns.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/p2pd/p2pd"
)

const (
	ctlPort    = 5351                   // NAT-PMP and PCP servers' port
	ctlTimeout = 2 * time.Second        // a call's bound when none is set
	ctlRTO     = 250 * time.Millisecond // first resend (RFC 6886 §3.1), then doubling
	ctlMaxRTO  = 64 * time.Second
	ctlMaxMsg  = 1100 // PCP's largest message (RFC 6887 §7); NAT-PMP's are smaller
)

// ctlTransport reaches one gateway's NAT-PMP or PCP server over UDP.
type ctlTransport struct {
	gw      netip.Addr
	local   netip.Addr    // the LAN address to send from; invalid: any
	port    uint16        // the server's port: ctlPort, but in tests
	timeout time.Duration // bounds each call; 0: ctlTimeout
}

// ctlSession is one call's socket, connected to the server so that only
// its datagrams arrive and an ICMP unreachable ends the call at once.
type ctlSession struct {
	c        *net.UDPConn
	ctx      context.Context
	server   netip.AddrPort
	start    time.Time
	deadline time.Time // the sooner of ctx's deadline and start+timeout
	ctxBound bool      // the deadline is ctx's
	stop     func()    // ends the ctx watch and waits for it if it ran
	buf      [ctlMaxMsg]byte
}

// open makes the call's socket. The caller must close the session.
func (t *ctlTransport) open(ctx context.Context) (*ctlSession, error) {
	s := &ctlSession{ctx: ctx, server: netip.AddrPortFrom(t.gw, t.port), start: time.Now()}
	if ctx.Err() != nil {
		return nil, s.ctxErr()
	}
	timeout := t.timeout
	if timeout <= 0 {
		timeout = ctlTimeout
	}
	s.deadline = s.start.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(s.deadline) {
		s.deadline, s.ctxBound = d, true
	}
	var laddr *net.UDPAddr
	if t.local.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.local, 0))
	}
	c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(s.server))
	if err != nil {
		return nil, err
	}
	s.c = c
	// Wake a blocked read when ctx ends.
	ran := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.SetReadDeadline(time.Unix(1, 0))
		close(ran)
	})
	s.stop = func() {
		if !stop() {
			<-ran
		}
	}
	return s, nil
}

func (s *ctlSession) close() {
	s.stop()
	s.c.Close()
}

// localAddr is the address the socket sends from.
func (s *ctlSession) localAddr() netip.Addr {
	if a, ok := s.c.LocalAddr().(*net.UDPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// roundTrip sends req, and sends it again after 250 ms, then doubling
// waits, until answer takes a datagram (done) or the call's time ends.
// answer sees each datagram from the server and returns false for those
// that are not the reply, which are ignored.
func (s *ctlSession) roundTrip(req []byte, answer func(b []byte) (done bool, err error)) error {
	for rto := ctlRTO; ; rto = min(2*rto, ctlMaxRTO) {
		if _, err := s.c.Write(req); err != nil {
			return s.ioErr(err)
		}
		wait := time.Now().Add(rto)
		if wait.After(s.deadline) {
			wait = s.deadline
		}
		s.c.SetReadDeadline(wait)
		if s.ctx.Err() != nil {
			return s.ctxErr() // the watch may have run before SetReadDeadline
		}
		for {
			n, err := s.c.Read(s.buf[:])
			if err != nil {
				if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return s.ioErr(err)
			}
			if done, err := answer(s.buf[:n]); done {
				return err
			}
		}
		if s.ctx.Err() != nil {
			return s.ctxErr()
		}
		if !time.Now().Before(s.deadline) {
			return s.silent()
		}
	}
}

// silent is the error of a server that did not answer in time.
func (s *ctlSession) silent() error {
	took := time.Since(s.start).Round(time.Millisecond)
	if s.ctxBound {
		return fmt.Errorf("%w: no answer from %v in %v: %w", ErrNoGateway, s.server, took, context.DeadlineExceeded)
	}
	return fmt.Errorf("%w: no answer from %v in %v", ErrNoGateway, s.server, took)
}

func (s *ctlSession) ctxErr() error {
	err := s.ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		s.ctxBound = true
		return s.silent()
	}
	return fmt.Errorf("asking %v: %w", s.server, err)
}

// ioErr reports an ICMP unreachable as ErrNoGateway.
func (s *ctlSession) ioErr(err error) error {
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.EHOSTUNREACH} {
		if errors.Is(err, errno) {
			return fmt.Errorf("%w: %v: %w", ErrNoGateway, s.server, errno)
		}
	}
	return err
}

// leaseSeconds is a requested lifetime in whole seconds, rounded up.
func leaseSeconds(d time.Duration) (uint32, error) {
	if d <= 0 {
		return 0, fmt.Errorf("lifetime %v is not positive", d)
	}
	s := d / time.Second
	if d%time.Second != 0 {
		s++
	}
	return uint32(min(s, math.MaxUint32)), nil
}

// NAT-PMP opcodes and sizes (RFC 6886 §3).
const (
	pmpOpAddr    = 0   // external address
	pmpOpUDP     = 1   // map UDP
	pmpOpTCP     = 2   // map TCP
	pmpReply     = 128 // added to a request's opcode in its response
	pmpErrLen    = 8   // a response that carries only a result code and epoch
	pmpAddrLen   = 12
	pmpMapLen    = 16
	pmpMapReqLen = 12
)

// pmpClient is a NAT-PMP client of one gateway. It keeps no state between
// calls.
type pmpClient struct{ ctlTransport }

var _ gateway = (*pmpClient)(nil)

func newPMP(gw, local netip.Addr, timeout time.Duration) *pmpClient {
	return &pmpClient{ctlTransport{gw: gw.Unmap(), local: local.Unmap(), port: ctlPort, timeout: timeout}}
}

func (*pmpClient) Protocol() string { return "nat-pmp" }

// ExternalAddr asks the gateway's external IPv4 address and its epoch.
func (p *pmpClient) ExternalAddr(ctx context.Context) (netip.Addr, uint32, error) {
	s, err := p.open4(ctx)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	defer s.close()
	return p.external(s)
}

// Map asks for a mapping of internal's port to external port want (0: any;
// a renewal suggests prev's), for lifetime.
func (p *pmpClient) Map(ctx context.Context, proto p2pd.Proto, internal netip.AddrPort, want uint16, lifetime time.Duration, prev *lease) (lease, error) {
	op, err := pmpOpcode(proto, internal.Port())
	if err != nil {
		return lease{}, p.fail(err)
	}
	secs, err := leaseSeconds(lifetime)
	if err != nil {
		return lease{}, p.fail(err)
	}
	if want == 0 && prev != nil && prev.Protocol == p.Protocol() && prev.Proto == proto {
		want = prev.External.Port()
	}
	s, err := p.open4(ctx)
	if err != nil {
		return lease{}, err
	}
	defer s.close()
	ip, _, err := p.external(s)
	if err != nil {
		return lease{}, err
	}
	r, granted, err := p.mapping(s, op, internal.Port(), want, secs)
	if err != nil {
		return lease{}, err
	}
	if r.external == 0 || r.lifetime == 0 {
		return lease{}, p.fail(fmt.Errorf("%w: granted port %d for %d s", ErrRefused, r.external, r.lifetime))
	}
	return lease{
		Protocol: p.Protocol(),
		Proto:    proto,
		Internal: internal,
		External: netip.AddrPortFrom(ip, r.external),
		Lifetime: time.Duration(r.lifetime) * time.Second,
		Granted:  granted,
		Epoch:    r.epoch,
	}, nil
}

// Unmap deletes l: lifetime 0 and external port 0 (RFC 6886 §3.4).
func (p *pmpClient) Unmap(ctx context.Context, l lease) error {
	op, err := pmpOpcode(l.Proto, l.Internal.Port())
	if err != nil {
		return p.fail(err)
	}
	s, err := p.open4(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	_, _, err = p.mapping(s, op, l.Internal.Port(), 0, 0)
	return err
}

// open4 opens a session to an IPv4 gateway: NAT-PMP has no IPv6.
func (p *pmpClient) open4(ctx context.Context) (*ctlSession, error) {
	if !p.gw.Is4() {
		return nil, p.fail(fmt.Errorf("gateway %v is not IPv4", p.gw))
	}
	s, err := p.open(ctx)
	if err != nil {
		return nil, p.fail(err)
	}
	return s, nil
}

// external runs opcode 0 over s.
func (p *pmpClient) external(s *ctlSession) (netip.Addr, uint32, error) {
	var r pmpAddrResp
	err := s.roundTrip([]byte{0, pmpOpAddr}, func(b []byte) (bool, error) {
		var ok bool
		r, ok = parsePMPAddr(b)
		return ok, nil
	})
	if err != nil {
		return netip.Addr{}, 0, p.fail(err)
	}
	if r.result != 0 {
		return netip.Addr{}, 0, p.refused(r.result)
	}
	return r.ip, r.epoch, nil
}

// mapping runs a mapping request over s, and returns the success response
// and when it came.
func (p *pmpClient) mapping(s *ctlSession, op byte, internal, want uint16, secs uint32) (pmpMapResp, time.Time, error) {
	req := make([]byte, pmpMapReqLen)
	req[1] = op
	binary.BigEndian.PutUint16(req[4:], internal)
	binary.BigEndian.PutUint16(req[6:], want)
	binary.BigEndian.PutUint32(req[8:], secs)
	var r pmpMapResp
	var at time.Time
	err := s.roundTrip(req, func(b []byte) (bool, error) {
		m, ok := parsePMPMap(b)
		// Error responses may lack the port (RFC 6886 §3.5).
		if !ok || m.op != pmpReply+op || m.result == 0 && m.internal != internal {
			return false, nil
		}
		r, at = m, time.Now()
		return true, nil
	})
	if err != nil {
		return r, at, p.fail(err)
	}
	if r.result != 0 {
		return r, at, p.refused(r.result)
	}
	return r, at, nil
}

func (p *pmpClient) fail(err error) error { return &MapError{Protocol: p.Protocol(), Err: err} }

func (p *pmpClient) refused(code uint16) error {
	return &MapError{Protocol: p.Protocol(), Code: int(code), Err: fmt.Errorf("%w: %s", ErrRefused, pmpResult(code))}
}

func pmpOpcode(proto p2pd.Proto, internal uint16) (byte, error) {
	if internal == 0 {
		return 0, errors.New("internal port 0") // with lifetime 0: delete every mapping
	}
	switch proto {
	case p2pd.UDP:
		return pmpOpUDP, nil
	case p2pd.TCP:
		return pmpOpTCP, nil
	}
	return 0, fmt.Errorf("no NAT-PMP opcode for %v", proto)
}

// pmpResult names a NAT-PMP result code (RFC 6886 §3.5).
func pmpResult(code uint16) string {
	switch code {
	case 1:
		return "unsupported version"
	case 2:
		return "not authorized"
	case 3:
		return "network failure"
	case 4:
		return "out of resources"
	case 5:
		return "unsupported opcode"
	}
	return "unknown result"
}

// pmpAddrResp is a response to opcode 0.
type pmpAddrResp struct {
	result uint16
	epoch  uint32
	ip     netip.Addr // valid when result is 0
}

// parsePMPAddr parses a response to opcode 0; ok is false for anything
// else. An error may come in the 8-byte form of RFC 6886 §3.5.
func parsePMPAddr(b []byte) (r pmpAddrResp, ok bool) {
	if len(b) < pmpErrLen || b[0] != 0 || b[1] != pmpReply+pmpOpAddr {
		return r, false
	}
	r.result = binary.BigEndian.Uint16(b[2:])
	r.epoch = binary.BigEndian.Uint32(b[4:])
	if len(b) < pmpAddrLen {
		return r, r.result != 0 && len(b) == pmpErrLen // an error may be the short form
	}
	if r.result == 0 {
		r.ip = netip.AddrFrom4([4]byte(b[8:12]))
	}
	return r, true
}

// pmpMapResp is a response to a mapping request.
type pmpMapResp struct {
	op       byte // pmpReply + the request's opcode
	result   uint16
	epoch    uint32
	internal uint16 // these three: from a full-size response
	external uint16
	lifetime uint32
}

// parsePMPMap parses a response to opcode 1 or 2; ok is false for anything
// else. An error may come in the 8-byte form of RFC 6886 §3.5.
func parsePMPMap(b []byte) (r pmpMapResp, ok bool) {
	if len(b) < pmpErrLen || b[0] != 0 || b[1] != pmpReply+pmpOpUDP && b[1] != pmpReply+pmpOpTCP {
		return r, false
	}
	r.op = b[1]
	r.result = binary.BigEndian.Uint16(b[2:])
	r.epoch = binary.BigEndian.Uint32(b[4:])
	if len(b) < pmpMapLen {
		return r, r.result != 0 && len(b) == pmpErrLen // an error may be the short form
	}
	r.internal = binary.BigEndian.Uint16(b[8:])
	r.external = binary.BigEndian.Uint16(b[10:])
	r.lifetime = binary.BigEndian.Uint32(b[12:])
	return r, true
}
