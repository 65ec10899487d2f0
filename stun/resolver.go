package stun

import (
	"cmp"
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"
)

// Defaults of a [Resolver].
const (
	DefaultPort    = 3478                   // port of a server given without one
	DefaultTimeout = 3 * time.Second        // bound of one lookup, all servers and retransmissions included
	DefaultRTO     = 500 * time.Millisecond // first retransmission timeout (RFC 8489 §6.2.1)
	DefaultRetries = 6                      // retransmissions per server (RFC 8489's Rc = 7 requests)
	DefaultTTL     = 5 * time.Minute        // how long a found EXT IP is kept
	DefaultFailTTL = 10 * time.Second       // how long a failure is kept
)

// Resolver is an [p2pd.ExtResolver] that asks STUN servers (RFC 8489 Binding
// requests over UDP) which address they see. Each request is sent from the
// NIC IP being resolved (the socket is bound to it), so the answer is the
// NAT mapping of that address.
//
// Several servers are asked at once, and their answers must agree: at least
// Agree servers must report the same external IP, and more servers must
// report it than any other IP, before it is trusted. Anything else (no
// server answered, too few did, they disagree) is an error wrapping
// [p2pd.ErrExtUnknown], a [*Error] that says why; an address is never guessed.
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
// Used by [p2pd.Interface.Resolve], which asks only about private NIC IPs (public
// ones are their own EXT IP), ExtAddr resolves every private NIC IP of the
// interface of the same family at once on the first call, so that a slow or
// unreachable server costs at most Timeout per family, not per address.
type Resolver struct {
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
	// DefaultTimeout. The context of ExtAddr may end it sooner.
	Timeout time.Duration

	// RTO is the first retransmission timeout; it doubles after each
	// retransmission. Zero: DefaultRTO.
	RTO time.Duration

	// Retries is the number of retransmissions per server. Zero:
	// DefaultRetries. Negative: none.
	Retries int

	// TTL is how long a found external IP is cached; FailTTL how long a
	// failure is. Zero: DefaultTTL and DefaultFailTTL. Negative: not
	// cached.
	TTL, FailTTL time.Duration

	mu    sync.Mutex
	cache map[netip.Addr]stunEntry
	now   func() time.Time // tests
}

type stunEntry struct {
	ext     netip.Addr
	err     error
	expires time.Time
}

// Answer is what one server said about one NIC IP.
type Answer struct {
	Server string         // as configured
	Addr   netip.AddrPort // the server's address; invalid if its name did not resolve
	Mapped netip.AddrPort // the address the server saw; invalid when Err is set
	Err    error
}

func (a Answer) String() string {
	name := a.Server
	if a.Addr.IsValid() && a.Addr.String() != name {
		name += " (" + a.Addr.String() + ")"
	}
	if a.Err != nil {
		return name + ": " + errtext.Trim(a.Err)
	}
	return name + ": " + a.Mapped.String()
}

func (r *Resolver) timeout() time.Duration { return cmp.Or(r.Timeout, DefaultTimeout) }
func (r *Resolver) rto() time.Duration     { return cmp.Or(r.RTO, DefaultRTO) }
func (r *Resolver) retries() int {
	switch {
	case r.Retries == 0:
		return DefaultRetries
	case r.Retries < 0:
		return 0
	}
	return r.Retries
}

func (r *Resolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// ExtAddr returns the external IP that the STUN servers agree on for traffic
// sent from nic. It implements [p2pd.ExtResolver]. iface may be nil; when it is
// not, the interface's other NIC IPs of nic's family that are not cached
// are resolved in the same round (see [Resolver]).
//
// When the servers cannot tell, the error is a *Error wrapping
// ErrExtUnknown. A cancelled ctx returns ctx's error (not ErrExtUnknown), so
// that Interface.Resolve gives up; a ctx deadline that ends the lookup counts
// as servers not answering.
func (r *Resolver) ExtAddr(ctx context.Context, iface *p2pd.Interface, nic netip.Addr) (netip.Addr, error) {
	nic = nic.Unmap()
	if e, ok := r.cached(nic); ok {
		return e.ext, e.err
	}
	batch := []netip.Addr{nic}
	if iface != nil {
		for _, a := range iface.Addrs {
			ip := a.Addr.Unmap()
			// The addresses Interface.Resolve will ask about next (see
			// its route rules); a miss is only resolved in a later round.
			servable := a.Usable() && a.Flags&p2pd.AddrTemporary == 0 && a.Scope() != p2pd.ScopeOther
			if ip == nic || ip.Is4() != nic.Is4() || !servable ||
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
		return netip.Addr{}, errtext.Errorf("p2pd: stun: external address of %v: %w", nic, err)
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
func (r *Resolver) Err(nic netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cache[nic.Unmap()].err
}

// Forget empties the cache.
func (r *Resolver) Forget() {
	r.mu.Lock()
	r.cache = nil
	r.mu.Unlock()
}

func (r *Resolver) cached(nic netip.Addr) (stunEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[nic]
	if !ok || !r.clock().Before(e.expires) {
		return stunEntry{}, false
	}
	return e, true
}

func (r *Resolver) store(nic netip.Addr, e stunEntry) {
	ttl := cmp.Or(r.TTL, DefaultTTL)
	if e.err != nil {
		ttl = cmp.Or(r.FailTTL, DefaultFailTTL)
		var se *Error
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
