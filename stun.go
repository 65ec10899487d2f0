package p2pd

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
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pion/stun/v3"
)

// Defaults of a [STUNResolver].
const (
	DefaultSTUNPort    = 3478                   // port of a server given without one
	DefaultSTUNTimeout = 3 * time.Second        // bound of one lookup, all servers and retransmissions included
	DefaultSTUNRTO     = 500 * time.Millisecond // first retransmission timeout (RFC 8489 §6.2.1)
	DefaultSTUNRetries = 6                      // retransmissions per server (RFC 8489's Rc = 7 requests)
	DefaultSTUNTTL     = 5 * time.Minute        // how long a found EXT IP is kept
	DefaultSTUNFailTTL = 10 * time.Second       // how long a failure is kept
)

// STUNResolver is an [ExtResolver] that asks STUN servers (RFC 8489 Binding
// requests over UDP) which address they see. Each request is sent from the
// NIC IP being resolved (the socket is bound to it), so the answer is the
// NAT mapping of that address.
//
// Several servers are asked at once, and their answers must agree: at least
// Agree servers must report the same external IP, and more servers must
// report it than any other IP, before it is trusted. Anything else (no
// server answered, too few did, they disagree) is an error wrapping
// ErrExtUnknown, a [*STUNError] that says why; an address is never guessed.
// Answers, found or not, are cached per NIC IP.
//
// The zero value, with Servers set, is ready to use. Set the fields before
// the first lookup and do not change them afterwards. The methods are safe
// for concurrent use.
//
// Sockets are made on the goroutine that calls ExtAddr, so a caller whose OS
// thread has entered a network namespace resolves in that namespace (host
// names are looked up with the default resolver, which may not).
//
// Used by [Interface.Resolve], which asks only about private NIC IPs (public
// ones are their own EXT IP), ExtAddr resolves every private NIC IP of the
// interface of the same family at once on the first call, so that a slow or
// unreachable server costs at most Timeout per family, not per address.
type STUNResolver struct {
	// Servers are the STUN servers: "ip:port", "[ipv6]:port", "host:port",
	// or an IP or host without port (port 3478). A server is used for the
	// NIC IPs of its family. Servers are counted by IP: two entries with the
	// same IP are one server. No default: p2pd contacts no server it was
	// not given.
	Servers []string

	// Agree is how many servers must report the same external IP. Zero: 2
	// when two or more servers of the NIC IP's family are configured, else
	// 1.
	Agree int

	// Timeout bounds one lookup (all servers, all retransmissions). Zero:
	// DefaultSTUNTimeout. The context of ExtAddr may end it sooner.
	Timeout time.Duration

	// RTO is the first retransmission timeout; it doubles after each
	// retransmission. Zero: DefaultSTUNRTO.
	RTO time.Duration

	// Retries is the number of retransmissions per server. Zero:
	// DefaultSTUNRetries. Negative: none.
	Retries int

	// TTL is how long a found external IP is cached; FailTTL how long a
	// failure is. Zero: DefaultSTUNTTL and DefaultSTUNFailTTL. Negative: not
	// cached.
	TTL, FailTTL time.Duration

	// Logger receives a warning when a lookup fails. Nil: slog.Default().
	Logger *slog.Logger

	mu    sync.Mutex
	cache map[netip.Addr]stunEntry
	now   func() time.Time // tests
}

type stunEntry struct {
	ext     netip.Addr
	err     error
	expires time.Time
}

// STUNAnswer is what one server said about one NIC IP.
type STUNAnswer struct {
	Server string         // as configured
	Addr   netip.AddrPort // the server's address; invalid if its name did not resolve
	Mapped netip.AddrPort // the address the server saw; invalid when Err is set
	Err    error
}

func (a STUNAnswer) String() string {
	name := a.Server
	if a.Addr.IsValid() && a.Addr.String() != name {
		name += " (" + a.Addr.String() + ")"
	}
	if a.Err != nil {
		return name + ": " + a.Err.Error()
	}
	return name + ": " + a.Mapped.String()
}

// STUNError says why a STUNResolver found no external address for a NIC IP.
// It wraps ErrExtUnknown, and the context's error when the context ended the
// lookup.
type STUNError struct {
	NIC     netip.Addr
	Reason  string       // e.g. "no STUN server answered", "STUN servers disagree"
	Answers []STUNAnswer // one per server asked
	ctxErr  error
	config  bool // no server of the family, or Agree too high: not the network's fault
}

func (e *STUNError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "p2pd: stun: external address of %v unknown: %s", e.NIC, e.Reason)
	for i, a := range e.Answers {
		if i == 0 {
			b.WriteString(" [")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(a.String())
		if i == len(e.Answers)-1 {
			b.WriteString("]")
		}
	}
	return b.String()
}

// Unwrap returns ErrExtUnknown and, when the context ended the lookup, its
// error.
func (e *STUNError) Unwrap() []error {
	if e.ctxErr != nil {
		return []error{ErrExtUnknown, e.ctxErr}
	}
	return []error{ErrExtUnknown}
}

// errSTUNAbandoned marks the servers still being waited for when the others
// decided.
var errSTUNAbandoned = errors.New("not waited for: the other answers decided")

// ErrSTUNTimeout is the error of a server that did not answer in time.
var ErrSTUNTimeout = errors.New("p2pd: stun: no answer")

func (r *STUNResolver) timeout() time.Duration { return cmp.Or(r.Timeout, DefaultSTUNTimeout) }
func (r *STUNResolver) rto() time.Duration     { return cmp.Or(r.RTO, DefaultSTUNRTO) }
func (r *STUNResolver) retries() int {
	switch {
	case r.Retries == 0:
		return DefaultSTUNRetries
	case r.Retries < 0:
		return 0
	}
	return r.Retries
}

func (r *STUNResolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

func (r *STUNResolver) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// ExtAddr returns the external IP that the STUN servers agree on for traffic
// sent from nic. It implements [ExtResolver]. iface may be nil; when it is
// not, the interface's other NIC IPs of nic's family that are not cached
// are resolved in the same round (see [STUNResolver]).
//
// When the servers cannot tell, the error is a *STUNError wrapping
// ErrExtUnknown. A cancelled ctx returns ctx's error (not ErrExtUnknown), so
// that Interface.Resolve gives up; a ctx deadline that ends the lookup counts
// as servers not answering.
func (r *STUNResolver) ExtAddr(ctx context.Context, iface *Interface, nic netip.Addr) (netip.Addr, error) {
	nic = nic.Unmap()
	if e, ok := r.cached(nic); ok {
		return e.ext, e.err
	}
	batch := []netip.Addr{nic}
	if iface != nil {
		for _, a := range iface.Addrs {
			ip := a.Addr.Unmap()
			if ip == nic || ip.Is4() != nic.Is4() || !a.servable() ||
				(ip.Is6() && ip.IsLinkLocalUnicast()) || slices.Contains(batch, ip) {
				continue
			}
			if _, ok := r.cached(ip); !ok {
				batch = append(batch, ip)
			}
		}
	}
	res := r.lookup(ctx, batch)
	if err := ctx.Err(); errors.Is(err, context.Canceled) {
		return netip.Addr{}, fmt.Errorf("p2pd: stun: external address of %v: %w", nic, err)
	}
	for i := range res {
		r.store(batch[i], res[i])
	}
	return res[0].ext, res[0].err
}

// Err returns why the last lookup of nic found no external address: nil when
// it found one or nic was never looked up. It is how
// a caller of Interface.Resolve, which treats ErrExtUnknown as "no EXT IP",
// learns the reason.
func (r *STUNResolver) Err(nic netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cache[nic.Unmap()].err
}

// Forget empties the cache.
func (r *STUNResolver) Forget() {
	r.mu.Lock()
	r.cache = nil
	r.mu.Unlock()
}

func (r *STUNResolver) cached(nic netip.Addr) (stunEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[nic]
	if !ok || !r.clock().Before(e.expires) {
		return stunEntry{}, false
	}
	return e, true
}

func (r *STUNResolver) store(nic netip.Addr, e stunEntry) {
	if e.err != nil {
		level := slog.LevelWarn
		if se, ok := e.err.(*STUNError); ok && se.config {
			level = slog.LevelDebug // a family without servers is a choice
		}
		r.logger().Log(context.Background(), level, "p2pd: stun: external address unknown", "nic", nic, "err", e.err)
	}
	ttl := cmp.Or(r.TTL, DefaultSTUNTTL)
	if e.err != nil {
		ttl = cmp.Or(r.FailTTL, DefaultSTUNFailTTL)
		var se *STUNError
		if errors.As(e.err, &se) && se.ctxErr != nil {
			ttl = -1 // the caller's deadline, not the servers, ended it
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = make(map[netip.Addr]stunEntry)
	}
	if ttl < 0 {
		// Not cached, but Err still reports it until the next lookup.
		r.cache[nic] = stunEntry{ext: e.ext, err: e.err}
		return
	}
	e.expires = r.clock().Add(ttl)
	r.cache[nic] = e
}

// stunServer is one configured server, resolved for one family.
type stunServer struct {
	name string
	addr netip.AddrPort
	err  error // the name did not resolve
}

// servers returns the configured servers usable from family f (one per IP).
func (r *STUNResolver) servers(ctx context.Context, f Family) []stunServer {
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
			if FamilyOf(ip) != f || seen[ip] {
				continue
			}
			seen[ip] = true
			out = append(out, stunServer{name: s, addr: netip.AddrPortFrom(ip, port)})
			continue
		}
		network := "ip4"
		if f == IPv6 {
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
	if ip, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return ip.String(), DefaultSTUNPort, nil
	}
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		if s == "" || strings.ContainsAny(s, ":[]/ ") {
			return "", 0, fmt.Errorf("%w: STUN server %q", ErrInvalid, s)
		}
		return s, DefaultSTUNPort, nil
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, fmt.Errorf("%w: STUN server %q", ErrInvalid, s)
	}
	return host, uint16(port), nil
}

// lookup resolves every nic of batch (all of one family) in one round and
// returns one entry per nic, in order.
func (r *STUNResolver) lookup(ctx context.Context, batch []netip.Addr) []stunEntry {
	out := make([]stunEntry, len(batch))
	parent := ctx
	own := time.Now().Add(r.timeout())
	ctx, cancel := context.WithDeadline(ctx, own)
	defer cancel()
	f := FamilyOf(batch[0])
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
	answers := make([][]STUNAnswer, len(batch))
	pending := make([]int, len(batch))
	conns := make([][]*net.UDPConn, len(batch))
	results := make(chan result, len(batch)*max(1, len(servers)))
	var wg sync.WaitGroup
	var jobs []job
	for i, nic := range batch {
		answers[i] = make([]STUNAnswer, len(servers))
		conns[i] = make([]*net.UDPConn, len(servers))
		for j, s := range servers {
			answers[i][j] = STUNAnswer{Server: s.name, Addr: s.addr, Err: s.err}
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
			m, _, err := r.transact(ctx, c, netip.AddrPort{}, nil, func(netip.AddrPort) bool { return true })
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
		e := &STUNError{NIC: batch[i]}
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
				e.Answers[j].Err = errSTUNAbandoned
				if ctx.Err() != nil || !time.Now().Before(own) {
					e.Answers[j].Err = ErrSTUNTimeout
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

// transact sends a Binding request (with extra attributes from add) over c
// and retransmits it (RTO doubling, Retries times) until a response with its
// transaction ID arrives from an address accepted by from, ctx ends, or the
// last wait runs out. With to invalid, c must be connected.
func (r *STUNResolver) transact(ctx context.Context, c *net.UDPConn, to netip.AddrPort, add func(*stun.Message), from func(netip.AddrPort) bool) (*stun.Message, netip.AddrPort, error) {
	req := stun.New()
	req.SetType(stun.BindingRequest)
	if err := req.NewTransactionID(); err != nil {
		return nil, netip.AddrPort{}, err
	}
	req.WriteHeader()
	if add != nil {
		add(req)
	}
	if err := stun.Fingerprint.AddTo(req); err != nil {
		return nil, netip.AddrPort{}, err
	}
	// End blocking reads when ctx ends.
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	buf := make([]byte, 1500)
	rto := r.rto()
	sends := r.retries() + 1
	deadline, hasDeadline := ctx.Deadline()
	for n := 0; n < sends && ctx.Err() == nil; n++ {
		if hasDeadline && !time.Now().Before(deadline) {
			break
		}
		var err error
		if to.IsValid() {
			_, err = c.WriteToUDPAddrPort(req.Raw, to)
		} else {
			_, err = c.Write(req.Raw)
		}
		if err != nil {
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
		c.SetReadDeadline(until)
		if ctx.Err() != nil {
			break // the AfterFunc may have run before SetReadDeadline
		}
		for {
			nr, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if stunIsTimeout(err) {
					break
				}
				return nil, netip.AddrPort{}, unwrapNetErr(err)
			}
			if !stun.IsMessage(buf[:nr]) || !from(stunUnmap(src)) {
				continue
			}
			m := stun.New()
			if err := stun.Decode(append([]byte(nil), buf[:nr]...), m); err != nil {
				continue
			}
			if m.TransactionID != req.TransactionID || m.Type.Method != stun.MethodBinding {
				continue
			}
			switch m.Type.Class {
			case stun.ClassSuccessResponse:
				return m, stunUnmap(src), nil
			case stun.ClassErrorResponse:
				var ec stun.ErrorCodeAttribute
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
	return nil, netip.AddrPort{}, ErrSTUNTimeout
}

// mappedAddr reads XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from old servers.
func mappedAddr(m *stun.Message) (netip.AddrPort, error) {
	var ip net.IP
	var port int
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err == nil {
		ip, port = xa.IP, xa.Port
	} else {
		var ma stun.MappedAddress
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
