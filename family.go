package p2pd

import (
	"fmt"
	"net/netip"
)

// Family is an IP address family.
type Family uint8

// Address families. AnyFamily means "every family the target supports" where a
// call accepts a choice, as P2PD's AF_ANY does.
const (
	AnyFamily Family = 0
	IPv4      Family = 4
	IPv6      Family = 6
)

// FamilyOf returns the family of a, or AnyFamily when a is not valid.
// IPv4-mapped IPv6 addresses are IPv6.
func FamilyOf(a netip.Addr) Family {
	switch {
	case a.Is4():
		return IPv4
	case a.Is6():
		return IPv6
	}
	return AnyFamily
}

// String returns "IPv4", "IPv6" or "any".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	case AnyFamily:
		return "any"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

// MarshalText encodes f as "4", "6" or "any".
func (f Family) MarshalText() ([]byte, error) {
	switch f {
	case IPv4:
		return []byte("4"), nil
	case IPv6:
		return []byte("6"), nil
	case AnyFamily:
		return []byte("any"), nil
	}
	return nil, fmt.Errorf("%w: %d", ErrBadFamily, uint8(f))
}

// UnmarshalText accepts "4", "6", "any", "ipv4", "ipv6" (any case of the last two).
func (f *Family) UnmarshalText(b []byte) error {
	switch string(b) {
	case "4", "IPv4", "ipv4", "IPV4":
		*f = IPv4
	case "6", "IPv6", "ipv6", "IPV6":
		*f = IPv6
	case "any", "", "0":
		*f = AnyFamily
	default:
		return fmt.Errorf("%w: %q", ErrBadFamily, b)
	}
	return nil
}

// families expands f into the concrete families it stands for, IPv4 first.
func (f Family) families() ([]Family, error) {
	switch f {
	case AnyFamily:
		return []Family{IPv4, IPv6}, nil
	case IPv4, IPv6:
		return []Family{f}, nil
	}
	return nil, fmt.Errorf("%w: %d", ErrBadFamily, uint8(f))
}

// wildcard returns the unspecified address of a concrete family.
func (f Family) wildcard() netip.Addr {
	if f == IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// loopback returns the loopback address of a concrete family.
func (f Family) loopback() netip.Addr {
	if f == IPv6 {
		return netip.IPv6Loopback()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// Proto is a transport protocol.
type Proto uint8

// Transport protocols.
const (
	TCP Proto = 1
	UDP Proto = 2
)

// String returns "TCP" or "UDP".
func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("Proto(%d)", uint8(p))
}

// network returns the Go network name for p on a concrete family ("tcp4", "udp6", ...).
func (p Proto) network(f Family) string {
	n := "tcp"
	if p == UDP {
		n = "udp"
	}
	if f == IPv6 {
		return n + "6"
	}
	return n + "4"
}
