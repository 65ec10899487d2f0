package reach

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"
)

// lease is one port mapping a gateway granted: traffic to External reaches
// Internal until Granted+Lifetime, unless renewed. For IPv6 it is a
// pinhole in the gateway's firewall: External is Internal.
type lease struct {
	Protocol string         // "pcp", "nat-pmp" or "upnp"
	Proto    p2pd.Proto     // TCP or UDP
	Internal netip.AddrPort // the listener's LAN address and port
	External netip.AddrPort // the gateway's public address and the mapped port
	Lifetime time.Duration  // granted; 0 for a UPnP permanent lease
	Granted  time.Time      // when the gateway answered

	// Epoch is the gateway's epoch (NAT-PMP and PCP: seconds since its
	// mappings were last lost) when it answered.
	Epoch uint32

	nonce [12]byte // PCP: the mapping nonce, reused to renew and delete

	// UPnP IPv6: the pinhole's UniqueID (WANIPv6FirewallControl), for
	// UpdatePinhole and DeletePinhole; pinhole says it is one.
	pinholeID uint16
	pinhole   bool
}

// gateway is a client of one port-mapping protocol on one gateway.
// Every call is bounded by ctx; implementations add no goroutine that
// outlives a call.
type gateway interface {
	// Protocol names it: "pcp", "nat-pmp" or "upnp".
	Protocol() string
	// Map asks for (or renews, when prev is non-nil and its protocol's)
	// a mapping of internal, suggesting external port want (0: any), for
	// lifetime.
	Map(ctx context.Context, proto p2pd.Proto, internal netip.AddrPort, want uint16, lifetime time.Duration, prev *lease) (lease, error)
	// Unmap deletes a mapping Map made.
	Unmap(ctx context.Context, l lease) error
}

// Errors of port mapping. Test for them with errors.Is.
var (
	// ErrNoMapping: no gateway protocol gave a mapping (none answered, or
	// each refused). The error wraps each protocol's *MapError.
	ErrNoMapping = errors.New("p2pd: reach: no port mapping")
	// ErrNoGateway: the protocol's server did not answer (ICMP
	// unreachable, or silence until the deadline).
	ErrNoGateway = errors.New("p2pd: reach: gateway does not answer")
	// ErrRefused: the gateway answered with an error result.
	ErrRefused = errors.New("p2pd: reach: gateway refused the mapping")
)

// MapError is one protocol's failure to map a listener.
type MapError struct {
	Protocol string // "pcp", "nat-pmp", "upnp"
	Code     int    // the protocol's result code, when it gave one
	Err      error  // wraps ErrNoGateway, ErrRefused, or a system or context error
}

func (e *MapError) Error() string {
	s := "p2pd: reach: " + e.Protocol
	if e.Code != 0 {
		s += " result " + strconv.Itoa(e.Code)
	}
	return s + ": " + errtext.TrimIn("reach", e.Err)
}

func (e *MapError) Unwrap() error { return e.Err }

// epochLost reports whether a gateway lost its mappings between two
// answers (RFC 6886 §3.6, RFC 6887 §8.5): its epoch must have advanced by
// at least 7/8 of the time that passed here, less 2 s of slack.
func epochLost(prevEpoch uint32, prevSeen time.Time, epoch uint32, seen time.Time) bool {
	elapsed := seen.Sub(prevSeen).Seconds()
	if elapsed < 0 {
		elapsed = 0
	}
	return float64(epoch)+2 < float64(prevEpoch)+elapsed*7/8
}
