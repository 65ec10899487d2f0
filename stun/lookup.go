package stun

// STUN messages are encoded and decoded with github.com/pion/stun/v3, a
// maintained implementation of RFC 5389/8489 (and the RFC 5780 attributes)
// used by pion/webrtc and pion/turn, fuzzed upstream: the parsing of
// untrusted datagrams is the part of STUN where mistakes are made, so it is
// not hand-rolled here. The transport (sockets bound to each NIC IP,
// retransmissions, timeouts, agreement between servers) is ours: pion's
// Client hides the socket and runs its own goroutines, and p2pd must make
// its sockets on the caller's goroutine so that a caller inside a network
// namespace resolves in it.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/p2pd/p2pd"

	pion "github.com/pion/stun/v3"
)

// stunServer is one configured server, resolved for one family.
type stunServer struct {
	name string
	addr netip.AddrPort
	err  error // the name did not resolve
}

// servers returns the configured servers usable from family f (one per IP).
func (r *Resolver) servers(ctx context.Context, f p2pd.Family) []stunServer {
	var out []stunServer
	seen := map[netip.Addr]bool{}
	for _, s := range r.Servers {
		host, port, err := splitServer(s)
		if err != nil {
			out = append(out, stunServer{name: s, err: err})
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			ip = ip.Unmap()
			if p2pd.FamilyOf(ip) != f || seen[ip] {
				continue
			}
			seen[ip] = true
			out = append(out, stunServer{name: s, addr: netip.AddrPortFrom(ip, port)})
			continue
		}
		network := "ip4"
		if f == p2pd.IPv6 {
			network = "ip6"
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
		if err != nil || len(ips) == 0 {
			out = append(out, stunServer{name: s, err: fmt.Errorf("no %s address: %v", f, cmp.Or[error](err, errors.New("none")))})
			continue
		}
		ip := ips[0].Unmap()
		if seen[ip] {
			continue
		}
		seen[ip] = true
		out = append(out, stunServer{name: s, addr: netip.AddrPortFrom(ip, port)})
	}
	return out
}

// splitServer parses "ip:port", "[ip6]:port", "host:port", "ip" or "host".
func splitServer(s string) (string, uint16, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String(), ap.Port(), nil
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.String(), DefaultPort, nil
	}
	if in, ok := strings.CutPrefix(s, "["); ok {
		if in, ok = strings.CutSuffix(in, "]"); ok {
			if ip, err := netip.ParseAddr(in); err == nil && ip.Is6() {
				return ip.String(), DefaultPort, nil
			}
		}
	}
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		if s == "" || strings.ContainsAny(s, ":[]/ ") {
			return "", 0, fmt.Errorf("%w: STUN server %q", p2pd.ErrInvalid, s)
		}
		return s, DefaultPort, nil
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, fmt.Errorf("%w: STUN server %q", p2pd.ErrInvalid, s)
	}
	return host, uint16(port), nil
}

// lookup resolves every nic of batch (all of one family) in one round and
// returns one entry per nic, in order.
func (r *Resolver) lookup(ctx context.Context, batch []netip.Addr) []stunEntry {
	out := make([]stunEntry, len(batch))
	parent := ctx
	own := time.Now().Add(r.timeout())
	ctx, cancel := context.WithDeadline(ctx, own)
	defer cancel()
	f := p2pd.FamilyOf(batch[0])
	servers := r.servers(ctx, f)
	agree := r.Agree
	if agree <= 0 {
		agree = min(2, len(servers))
	}
	type job struct {
		nic, srv int
	}
	type result struct {
		job
		mapped netip.AddrPort
		err    error
	}
	answers := make([][]Answer, len(batch))
	pending := make([]int, len(batch))
	conns := make([][]*net.UDPConn, len(batch))
	results := make(chan result, len(batch)*max(1, len(servers)))
	var wg sync.WaitGroup
	var jobs []job
	for i, nic := range batch {
		answers[i] = make([]Answer, len(servers))
		conns[i] = make([]*net.UDPConn, len(servers))
		for j, s := range servers {
			answers[i][j] = Answer{Server: s.name, Addr: s.addr, Err: s.err}
			if s.err != nil {
				continue
			}
			// The socket is made here, on the caller's goroutine (its
			// network namespace); only its use moves to a goroutine.
			c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(nic, 0)), net.UDPAddrFromAddrPort(s.addr))
			if err != nil {
				answers[i][j].Err = fmt.Errorf("socket from %v: %w", nic, unwrapNetErr(err))
				continue
			}
			conns[i][j] = c
			pending[i]++
			jobs = append(jobs, job{i, j})
		}
	}
	closeNIC := func(i int) {
		for j, c := range conns[i] {
			if c != nil {
				c.Close()
				conns[i][j] = nil
			}
		}
	}
	for _, jb := range jobs {
		c := conns[jb.nic][jb.srv]
		wg.Go(func() {
			m, _, err := r.socketTransact(ctx, c, netip.AddrPort{}, nil, func(netip.AddrPort) bool { return true })
			res := result{job: jb, err: err}
			if err == nil {
				res.mapped, res.err = mappedAddr(m)
			}
			results <- res
		})
	}

	done := make([]bool, len(batch))
	decide := func(i int) {
		if done[i] {
			return
		}
		votes := map[netip.Addr]int{}
		answered := 0
		for _, a := range answers[i] {
			if a.Err == nil && a.Mapped.IsValid() {
				votes[a.Mapped.Addr()]++
				answered++
			}
		}
		var lead netip.Addr
		lv, sv := 0, 0 // votes of the leading IP and of the runner-up
		for ip, v := range votes {
			switch {
			case v > lv:
				lead, lv, sv = ip, v, lv
			case v > sv:
				sv = v
			}
		}
		e := &Error{NIC: batch[i]}
		switch {
		case len(servers) == 0:
			e.Reason, e.config = fmt.Sprintf("no %s STUN server configured", f), true
		case agree > len(servers):
			e.Reason, e.config = fmt.Sprintf("%d servers must agree, %d %s servers configured", agree, len(servers), f), true
		case lv >= agree && lv > sv+pending[i]:
			out[i] = stunEntry{ext: lead}
			done[i] = true
			closeNIC(i)
			return
		case pending[i] > 0 && lv+pending[i] >= agree:
			return // wait for more answers
		case len(votes) > 1:
			e.Reason = fmt.Sprintf("STUN servers disagree (%d must agree on one IP, and more than on any other)", agree)
		case answered == 0:
			e.Reason = "no STUN server answered"
		default:
			e.Reason = fmt.Sprintf("%d of %d STUN servers answered, %d must agree", answered, len(servers), agree)
		}
		if err := parent.Err(); err != nil {
			e.ctxErr = err // the caller's context ended it, not our Timeout
		} else if pd, ok := parent.Deadline(); ok && !pd.After(own) && !time.Now().Before(pd) {
			// The same: the caller's deadline passed (reads time out at
			// it a hair before the context's timer sets parent.Err).
			e.ctxErr = context.DeadlineExceeded
		}
		e.Answers = slices.Clone(answers[i])
		for j := range e.Answers {
			if e.Answers[j].Err == nil && !e.Answers[j].Mapped.IsValid() {
				e.Answers[j].Err = errAbandoned
				if ctx.Err() != nil || !time.Now().Before(own) {
					e.Answers[j].Err = ErrTimeout
				}
			}
		}
		out[i] = stunEntry{err: e}
		done[i] = true
		closeNIC(i)
	}
	for i := range batch {
		decide(i)
	}
	for range jobs {
		res := <-results
		i := res.nic
		if done[i] {
			continue // decided already; its sockets were closed
		}
		answers[i][res.srv].Mapped, answers[i][res.srv].Err = res.mapped, res.err
		pending[i]--
		decide(i)
	}
	wg.Wait()
	for i := range batch {
		closeNIC(i)
	}
	return out
}

// transport carries the datagrams of one transaction: a socket of its
// own (socketTransport), or a listener's pipe (pipeTransport, probe.go).
type transport interface {
	send(raw []byte) error
	// recv returns the next datagram that may be the answer, or an error
	// satisfying stunIsTimeout at until. The datagram is the caller's.
	recv(until time.Time) ([]byte, netip.AddrPort, error)
}

// socketTransport is a socket made for the transaction, sending to to
// (invalid: the socket is connected).
type socketTransport struct {
	ctx context.Context // its end ends a blocking read (socketTransact)
	c   *net.UDPConn
	to  netip.AddrPort
	buf []byte
}

func (t *socketTransport) send(raw []byte) error {
	var err error
	if t.to.IsValid() {
		_, err = t.c.WriteToUDPAddrPort(raw, t.to)
	} else {
		_, err = t.c.Write(raw)
	}
	return err
}

func (t *socketTransport) recv(until time.Time) ([]byte, netip.AddrPort, error) {
	if t.buf == nil {
		t.buf = make([]byte, 1500)
	}
	t.c.SetReadDeadline(until)
	if err := t.ctx.Err(); err != nil {
		return nil, netip.AddrPort{}, err // ctx's AfterFunc may have run before SetReadDeadline
	}
	n, src, err := t.c.ReadFromUDPAddrPort(t.buf)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	return append([]byte(nil), t.buf[:n]...), src, nil
}

// newBinding builds a Binding request, with extra attributes from add.
func newBinding(add func(*pion.Message)) (*pion.Message, error) {
	req := pion.New()
	req.SetType(pion.BindingRequest)
	if err := req.NewTransactionID(); err != nil {
		return nil, err
	}
	req.WriteHeader()
	if add != nil {
		add(req)
	}
	if err := pion.Fingerprint.AddTo(req); err != nil {
		return nil, err
	}
	return req, nil
}

// transact sends req over t and retransmits it (RTO doubling, Retries
// times) until a response with its transaction ID arrives from an address
// accepted by from, ctx ends, or the last wait runs out.
func (r *Resolver) transact(ctx context.Context, t transport, req *pion.Message, from func(netip.AddrPort) bool) (*pion.Message, netip.AddrPort, error) {
	rto := r.rto()
	sends := r.retries() + 1
	deadline, hasDeadline := ctx.Deadline()
	for n := 0; n < sends && ctx.Err() == nil; n++ {
		if hasDeadline && !time.Now().Before(deadline) {
			break
		}
		if err := t.send(req.Raw); err != nil {
			return nil, netip.AddrPort{}, unwrapNetErr(err)
		}
		wait := rto << n
		if n == sends-1 {
			wait = rto * 16 // RFC 8489's Rm: the last request gets a long wait
		}
		until := time.Now().Add(wait)
		if hasDeadline && deadline.Before(until) {
			until = deadline
		}
		for ctx.Err() == nil {
			b, src, err := t.recv(until)
			if err != nil {
				if stunIsTimeout(err) {
					break
				}
				return nil, netip.AddrPort{}, unwrapNetErr(err)
			}
			if !pion.IsMessage(b) || !from(stunUnmap(src)) {
				continue
			}
			m := pion.New()
			if err := pion.Decode(b, m); err != nil {
				continue
			}
			if m.TransactionID != req.TransactionID || m.Type.Method != pion.MethodBinding {
				continue
			}
			switch m.Type.Class {
			case pion.ClassSuccessResponse:
				return m, stunUnmap(src), nil
			case pion.ClassErrorResponse:
				var ec pion.ErrorCodeAttribute
				if ec.GetFrom(m) == nil {
					return nil, stunUnmap(src), fmt.Errorf("p2pd: stun: error response %d %s", ec.Code, ec.Reason)
				}
				return nil, stunUnmap(src), errors.New("p2pd: stun: error response")
			}
		}
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, netip.AddrPort{}, err
	}
	return nil, netip.AddrPort{}, ErrTimeout
}

// socketTransact is transact over c, a socket of the transaction's own
// whose blocking reads end when ctx does.
func (r *Resolver) socketTransact(ctx context.Context, c *net.UDPConn, to netip.AddrPort, add func(*pion.Message), from func(netip.AddrPort) bool) (*pion.Message, netip.AddrPort, error) {
	req, err := newBinding(add)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	return r.transact(ctx, &socketTransport{ctx: ctx, c: c, to: to}, req, from)
}

// mappedAddr reads XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from old servers.
func mappedAddr(m *pion.Message) (netip.AddrPort, error) {
	var ip net.IP
	var port int
	var xa pion.XORMappedAddress
	if err := xa.GetFrom(m); err == nil {
		ip, port = xa.IP, xa.Port
	} else {
		var ma pion.MappedAddress
		if err := ma.GetFrom(m); err != nil {
			return netip.AddrPort{}, errors.New("p2pd: stun: response without a mapped address")
		}
		ip, port = ma.IP, ma.Port
	}
	a, ok := netip.AddrFromSlice(ip)
	a = a.Unmap()
	if !ok || !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || port <= 0 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("p2pd: stun: bad mapped address %v port %d", ip, port)
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

func stunIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// stunUnmap turns an IPv4-mapped IPv6 source into IPv4.
func stunUnmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// unwrapNetErr shortens "read udp 10.0.0.2:1234->...: recvmsg: connection
// refused" to the errno, which says it all next to the server's name.
func unwrapNetErr(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.ECONNREFUSED {
			return fmt.Errorf("refused (nothing listens there): %w", err)
		}
		return err
	}
	return err
}
