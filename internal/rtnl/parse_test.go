package rtnl

import "net/netip"

// What the tests and fuzzers call: the parsers over a whole buffer, and
// helpers of Addr and Route the library does not need.

// ParseAddrs parses a buffer holding zero or more netlink messages, as read
// from an RTM_GETADDR dump, and returns the RTM_NEWADDR messages of IPv4 and
// IPv6. NLMSG_DONE ends parsing; NLMSG_ERROR with a nonzero errno returns an
// error wrapping the syscall.Errno; other message types and families are
// skipped. Malformed input returns an error.
func ParseAddrs(b []byte) ([]Addr, error) { return parseAll(b, rtmNewAddr, parseAddr) }

// ParseRoutes parses a buffer as ParseAddrs does, for the RTM_NEWROUTE
// messages of an RTM_GETROUTE dump.
func ParseRoutes(b []byte) ([]Route, error) { return parseAll(b, rtmNewRoute, parseRoute) }

func parseAll[T any](b []byte, want uint16, parse func([]byte) (T, bool, error)) ([]T, error) {
	var out []T
	sink := collect(want, parse, &out)
	if _, err := parseMsgs(b, func(typ, _ uint16, _, _ uint32, p []byte) error { return sink(typ, p) }); err != nil {
		return nil, err
	}
	return out, nil
}

// Prefix returns Local with PrefixLen, unmasked (192.0.2.10/24), or an
// invalid prefix when Local is invalid or PrefixLen is too long for it.
func (a Addr) Prefix() netip.Prefix { return netip.PrefixFrom(a.Local, int(a.PrefixLen)) }

// IsDefault reports whether r is a default route (destination length 0).
func (r Route) IsDefault() bool { return r.DstLen == 0 }
