package reach

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"
)

// Source says where an external address came from.
type Source uint8

const (
	// SourcePublic: the listener's address is public, reached as it is.
	SourcePublic Source = iota + 1
	// SourceSTUN: a STUN server saw the listener's own socket at this
	// address (stun.Resolver.Probe): the NAT's mapping of the listener.
	SourceSTUN
	// SourceMapping: the gateway mapped the port (PCP, NAT-PMP or UPnP).
	SourceMapping
)

func (s Source) String() string {
	switch s {
	case SourcePublic:
		return "public"
	case SourceSTUN:
		return "stun"
	case SourceMapping:
		return "mapping"
	}
	return fmt.Sprintf("Source(%d)", uint8(s))
}

// External is one address the world reaches a listener at.
type External struct {
	Addr     netip.AddrPort
	Source   Source
	Protocol string    // of a mapping: "pcp", "nat-pmp" or "upnp"
	Updated  time.Time // when it was last confirmed
	Expires  time.Time // a mapping's lease end; zero otherwise (and for a permanent UPnP lease)
}

func (e External) String() string {
	s := e.Addr.String() + " (" + e.Source.String()
	if e.Protocol != "" {
		s += " " + e.Protocol
	}
	return s + ")"
}

// Endpoint is a listener with what is known of how the world reaches it:
// the daemon's own view (p2pd.Endpoint: routes and public addresses) and
// the Mapper's (External), best first.
type Endpoint struct {
	p2pd.Endpoint
	External []External
	// Err says why the Mapper has no mapping or STUN answer for the
	// listener; nil when it has them, or did not try (a public or
	// loopback address, a TCP listener for STUN).
	Err error
}

// String describes e, e.g. "UDP IPv4 10.88.1.2:7007 → 203.0.113.1:7007
// (mapping pcp), 203.0.113.1:7007 (stun)".
func (e Endpoint) String() string {
	s := fmt.Sprintf("%v %v %v", e.Proto, e.Family, e.Local)
	if len(e.External) == 0 {
		if e.Err != nil {
			return s + ": " + errtext.Trim(e.Err)
		}
		return s + ": not reachable from outside as far as known"
	}
	parts := make([]string, len(e.External))
	for i, x := range e.External {
		parts[i] = x.String()
	}
	return s + " → " + strings.Join(parts, ", ")
}

// equalExternal reports whether a and b list the same addresses from the
// same sources (freshness aside): what a change event is about.
func equalExternal(a, b []External) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Addr != b[i].Addr || a[i].Source != b[i].Source || a[i].Protocol != b[i].Protocol {
			return false
		}
	}
	return true
}
