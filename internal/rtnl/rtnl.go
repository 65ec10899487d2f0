// Package rtnl reads the Linux kernel's interface addresses and routes over
// rtnetlink (NETLINK_ROUTE).
//
// It gives what net.Interfaces does not: per-address IFA_F_* flags (IPv6
// tentative, deprecated, temporary, dadfailed...), the prefix length, the
// kernel scope and the lifetimes, and the routing tables of every family.
//
// [DumpAddrs], [DumpRoutes] and [OpenMonitor] need Linux and return an
// error wrapping [errors.ErrUnsupported] elsewhere. The parsers of the
// kernel's messages build everywhere, so that their tests and fuzzers run
// on any development machine.
//
// All functions are safe for concurrent use; none starts a goroutine.
package rtnl

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
)

// Address families. Messages of any other family (multicast routing caches,
// MPLS, ...) are skipped by the parsers.
const (
	FamilyIPv4 = 2  // AF_INET
	FamilyIPv6 = 10 // AF_INET6
)

// IFA_F_* address flags, as found in [Addr.Flags].
const (
	FlagTemporary      = 0x1 // IFA_F_TEMPORARY; on IPv4 the same bit is IFA_F_SECONDARY
	FlagNoDAD          = 0x2
	FlagOptimistic     = 0x4
	FlagDADFailed      = 0x8
	FlagHomeAddress    = 0x10
	FlagDeprecated     = 0x20
	FlagTentative      = 0x40
	FlagPermanent      = 0x80
	FlagManageTempAddr = 0x100
	FlagNoPrefixRoute  = 0x200
	FlagMCAutoJoin     = 0x400
	FlagStablePrivacy  = 0x800

	// FlagSecondary is FlagTemporary's meaning on IPv4 addresses.
	FlagSecondary = FlagTemporary
)

// RT_SCOPE_* values, as found in [Addr.Scope] and [Route.Scope].
const (
	ScopeUniverse = 0
	ScopeSite     = 200
	ScopeLink     = 253
	ScopeHost     = 254
	ScopeNowhere  = 255
)

// Routing tables and route types callers need.
const (
	TableDefault = 253 // RT_TABLE_DEFAULT
	TableMain    = 254 // RT_TABLE_MAIN
	TableLocal   = 255 // RT_TABLE_LOCAL

	TypeUnicast = 1 // RTN_UNICAST
	TypeLocal   = 2 // RTN_LOCAL
)

// Lifetime value meaning "forever" in [Addr.Preferred] and [Addr.Valid].
const Forever = 0xFFFFFFFF

// Addr is one RTM_NEWADDR message.
type Addr struct {
	Family    uint8      // FamilyIPv4 or FamilyIPv6
	PrefixLen uint8      // prefix length of the address
	Flags     uint32     // IFA_F_* bits: IFA_FLAGS when present (32 bits), else ifa_flags
	Scope     uint8      // RT_SCOPE_*: 0 universe, 200 site, 253 link, 254 host
	Index     uint32     // interface index
	Local     netip.Addr // IFA_LOCAL if present, else IFA_ADDRESS
	Peer      netip.Addr // IFA_ADDRESS when IFA_LOCAL is also present and differs (point-to-point), else invalid
	Label     string     // IFA_LABEL (IPv4 only in practice)

	// Lifetimes in seconds from IFA_CACHEINFO; Forever means forever,
	// 0 when the attribute is absent.
	Preferred, Valid uint32
}

// Route is one RTM_NEWROUTE message.
type Route struct {
	Family                uint8 // FamilyIPv4 or FamilyIPv6
	DstLen, SrcLen, TOS   uint8
	Table                 uint32     // RTA_TABLE when present, else rtm_table
	Protocol, Scope, Type uint8      // RTPROT_*, RT_SCOPE_*, RTN_*
	Flags                 uint32     // RTM_F_* and RTNH_F_* bits of rtm_flags
	Dst, Src              netip.Addr // RTA_DST, RTA_SRC; invalid when absent (Dst of a default route)
	Gateway               netip.Addr // RTA_GATEWAY, or RTA_VIA (an IPv6 gateway of an IPv4 route)
	PrefSrc               netip.Addr // RTA_PREFSRC
	OutIndex              uint32     // RTA_OIF, 0 when absent
	Priority              uint32     // RTA_PRIORITY (the metric), 0 when absent
	Nexthops              []Nexthop  // RTA_MULTIPATH; nil when absent or empty
}

// Nexthop is one rtnexthop entry of a multipath route.
type Nexthop struct {
	Gateway  netip.Addr // RTA_GATEWAY or RTA_VIA inside the entry; invalid when absent
	OutIndex uint32     // rtnh_ifindex
	Weight   int        // rtnh_hops+1
	Flags    uint8      // RTNH_F_*
}

// Prefix returns the destination prefix; for a default route, 0.0.0.0/0 or
// ::/0. It is invalid for an unknown family or an inconsistent DstLen.
func (r Route) Prefix() netip.Prefix {
	dst := r.Dst
	if !dst.IsValid() {
		switch r.Family {
		case FamilyIPv4:
			dst = netip.IPv4Unspecified()
		case FamilyIPv6:
			dst = netip.IPv6Unspecified()
		}
	}
	p, _ := dst.Prefix(int(r.DstLen))
	return p
}

// Netlink and rtnetlink constants the parsers need (linux/netlink.h,
// linux/rtnetlink.h, linux/if_addr.h), kept here so this file builds
// everywhere.
const (
	nlmsgHdrLen = 16 // struct nlmsghdr
	nlmsgError  = 2  // NLMSG_ERROR
	nlmsgDone   = 3  // NLMSG_DONE

	rtmNewAddr  = 20 // RTM_NEWADDR
	rtmGetAddr  = 22 // RTM_GETADDR
	rtmNewRoute = 24 // RTM_NEWROUTE
	rtmGetRoute = 26 // RTM_GETROUTE

	ifaddrmsgLen = 8  // struct ifaddrmsg
	rtmsgLen     = 12 // struct rtmsg
	rtattrLen    = 4  // struct rtattr
	rtnexthopLen = 8  // struct rtnexthop

	nlaTypeMask = 0x3fff // strips NLA_F_NESTED and NLA_F_NET_BYTEORDER

	ifaAddress   = 1
	ifaLocal     = 2
	ifaLabel     = 3
	ifaCacheinfo = 6
	ifaFlags     = 8

	rtaDst       = 1
	rtaSrc       = 2
	rtaOIF       = 4
	rtaGateway   = 5
	rtaPriority  = 6
	rtaPrefSrc   = 7
	rtaMultipath = 9
	rtaTable     = 15
	rtaVia       = 18
)

// align4 rounds n up to the netlink alignment (NLMSG_ALIGN, RTA_ALIGN and
// RTNH_ALIGN are all 4).
func align4(n int) int { return (n + 3) &^ 3 }

// next returns how far to advance past an element of length n when rest
// bytes remain: the aligned length, but the last element may omit its
// padding.
func next(n, rest int) int { return min(align4(n), rest) }

// A layout is how one kind of netlink element starts: its header holds
// the element's length, header included, in its first 4 bytes (a netlink
// message) or 2 (an rtattr, an rtnexthop).
type layout struct {
	header int    // the header's length
	len32  bool   // the length is 32 bits, else 16
	head   string // a header cut short, in errors
	name   string // the element, in errors
}

var (
	msgLayout     = layout{header: nlmsgHdrLen, len32: true, head: "netlink header", name: "netlink message"}
	attrLayout    = layout{header: rtattrLen, head: "attribute header", name: "attribute"}
	nexthopLayout = layout{header: rtnexthopLen, head: "rtnexthop", name: "rtnexthop"}
)

// walk walks the elements of b, laid out one after another as l says,
// each aligned to 4 bytes (the last one may omit its padding), and calls
// fn with each whole element, header included. It stops at fn's first
// error; errStop stops it without one.
func walk(b []byte, l layout, fn func(elem []byte) error) error {
	for len(b) > 0 {
		if len(b) < l.header {
			return fmt.Errorf("rtnl: truncated %s: %d bytes", l.head, len(b))
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		if l.len32 {
			n = int(binary.NativeEndian.Uint32(b[0:4]))
		}
		if n < l.header || n > len(b) {
			return fmt.Errorf("rtnl: bad %s length %d with %d bytes left", l.name, n, len(b))
		}
		if err := fn(b[:n]); err != nil {
			if err == errStop {
				return nil
			}
			return err
		}
		b = b[next(n, len(b)):]
	}
	return nil
}

// parseMsgs walks the netlink messages in b and calls fn with each message
// header and payload. It stops after NLMSG_DONE (done is true) and turns an
// NLMSG_ERROR with a nonzero errno into an error.
func parseMsgs(b []byte, fn func(typ, flags uint16, seq, pid uint32, payload []byte) error) (done bool, err error) {
	err = walk(b, msgLayout, func(m []byte) error {
		typ := binary.NativeEndian.Uint16(m[4:6])
		payload := m[nlmsgHdrLen:]
		switch typ {
		case nlmsgError:
			if len(payload) < 4 {
				return fmt.Errorf("rtnl: truncated netlink error: %d bytes", len(payload))
			}
			if e := errnoOf(payload); e != 0 {
				return fmt.Errorf("rtnl: netlink error: %w", e)
			}
			return nil // an acknowledgement
		case nlmsgDone:
			done = true
			// A dump may end with a negative errno in NLMSG_DONE.
			if len(payload) >= 4 {
				if e := errnoOf(payload); e != 0 {
					return fmt.Errorf("rtnl: netlink dump error: %w", e)
				}
			}
			return errStop
		}
		flags := binary.NativeEndian.Uint16(m[6:8])
		seq := binary.NativeEndian.Uint32(m[8:12])
		pid := binary.NativeEndian.Uint32(m[12:16])
		return fn(typ, flags, seq, pid, payload)
	})
	return done, err
}

// errnoOf returns the errno in the int32 that starts b; the kernel sends it
// negated.
func errnoOf(b []byte) syscall.Errno {
	e := int64(int32(binary.NativeEndian.Uint32(b)))
	if e < 0 {
		e = -e
	}
	return syscall.Errno(e)
}

// parseAttrs walks the rtattrs in b and calls fn with each type (flag bits
// stripped) and value.
func parseAttrs(b []byte, fn func(typ uint16, v []byte) error) error {
	return walk(b, attrLayout, func(a []byte) error {
		return fn(binary.NativeEndian.Uint16(a[2:4])&nlaTypeMask, a[rtattrLen:])
	})
}

// ipOf converts an address attribute of the given family, which must have
// exactly the family's size.
func ipOf(family uint8, what string, v []byte) (netip.Addr, error) {
	switch {
	case family == FamilyIPv4 && len(v) == 4:
		return netip.AddrFrom4([4]byte(v)), nil
	case family == FamilyIPv6 && len(v) == 16:
		return netip.AddrFrom16([16]byte(v)), nil
	}
	return netip.Addr{}, fmt.Errorf("rtnl: %s: %d bytes for family %d", what, len(v), family)
}

// u32 reads a 32-bit attribute.
func u32(what string, v []byte) (uint32, error) {
	if len(v) < 4 {
		return 0, fmt.Errorf("rtnl: %s: %d bytes, want 4", what, len(v))
	}
	return binary.NativeEndian.Uint32(v), nil
}

// collect returns a message handler that parses the messages of type want
// with parse and appends what it keeps to *out; other types are skipped.
func collect[T any](want uint16, parse func([]byte) (T, bool, error), out *[]T) func(typ uint16, p []byte) error {
	return func(typ uint16, p []byte) error {
		if typ != want {
			return nil
		}
		v, ok, err := parse(p)
		if ok {
			*out = append(*out, v)
		}
		return err
	}
}

// parseAddr parses the payload of one RTM_NEWADDR message; ok is false for
// a family other than IPv4 and IPv6.
func parseAddr(p []byte) (a Addr, ok bool, err error) {
	if len(p) < ifaddrmsgLen {
		return a, false, fmt.Errorf("rtnl: truncated ifaddrmsg: %d bytes", len(p))
	}
	a.Family = p[0]
	a.PrefixLen = p[1]
	a.Flags = uint32(p[2])
	a.Scope = p[3]
	a.Index = binary.NativeEndian.Uint32(p[4:8])
	if a.Family != FamilyIPv4 && a.Family != FamilyIPv6 {
		return a, false, nil
	}
	var local, addr netip.Addr
	err = parseAttrs(p[ifaddrmsgLen:], func(typ uint16, v []byte) (err error) {
		switch typ {
		case ifaAddress:
			addr, err = ipOf(a.Family, "IFA_ADDRESS", v)
		case ifaLocal:
			local, err = ipOf(a.Family, "IFA_LOCAL", v)
		case ifaLabel:
			a.Label = cstring(v)
		case ifaCacheinfo:
			if len(v) < 16 {
				return fmt.Errorf("rtnl: IFA_CACHEINFO: %d bytes, want 16", len(v))
			}
			a.Preferred = binary.NativeEndian.Uint32(v[0:4])
			a.Valid = binary.NativeEndian.Uint32(v[4:8])
		case ifaFlags:
			a.Flags, err = u32("IFA_FLAGS", v)
		}
		return err
	})
	if err != nil {
		return a, false, err
	}
	switch {
	case local.IsValid():
		a.Local = local
		if addr.IsValid() && addr != local {
			a.Peer = addr
		}
	default:
		a.Local = addr
	}
	return a, true, nil
}

// cstring returns v up to its first NUL.
func cstring(v []byte) string {
	for i, c := range v {
		if c == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}

// parseRoute parses the payload of one RTM_NEWROUTE message; ok is false
// for a family other than IPv4 and IPv6.
func parseRoute(p []byte) (r Route, ok bool, err error) {
	if len(p) < rtmsgLen {
		return r, false, fmt.Errorf("rtnl: truncated rtmsg: %d bytes", len(p))
	}
	r.Family = p[0]
	r.DstLen = p[1]
	r.SrcLen = p[2]
	r.TOS = p[3]
	r.Table = uint32(p[4])
	r.Protocol = p[5]
	r.Scope = p[6]
	r.Type = p[7]
	r.Flags = binary.NativeEndian.Uint32(p[8:12])
	if r.Family != FamilyIPv4 && r.Family != FamilyIPv6 {
		return r, false, nil
	}
	err = parseAttrs(p[rtmsgLen:], func(typ uint16, v []byte) (err error) {
		switch typ {
		case rtaDst:
			r.Dst, err = ipOf(r.Family, "RTA_DST", v)
		case rtaSrc:
			r.Src, err = ipOf(r.Family, "RTA_SRC", v)
		case rtaGateway:
			r.Gateway, err = ipOf(r.Family, "RTA_GATEWAY", v)
		case rtaVia:
			r.Gateway, err = via(v)
		case rtaPrefSrc:
			r.PrefSrc, err = ipOf(r.Family, "RTA_PREFSRC", v)
		case rtaOIF:
			r.OutIndex, err = u32("RTA_OIF", v)
		case rtaPriority:
			r.Priority, err = u32("RTA_PRIORITY", v)
		case rtaTable:
			r.Table, err = u32("RTA_TABLE", v)
		case rtaMultipath:
			r.Nexthops, err = parseNexthops(r.Family, v)
		}
		return err
	})
	if err != nil {
		return r, false, err
	}
	return r, true, nil
}

// via parses an RTA_VIA value (struct rtvia: a 16-bit family and the
// address). A family other than IPv4 and IPv6 gives an invalid address.
func via(v []byte) (netip.Addr, error) {
	if len(v) < 2 {
		return netip.Addr{}, fmt.Errorf("rtnl: RTA_VIA: %d bytes", len(v))
	}
	f := binary.NativeEndian.Uint16(v[0:2])
	if f != FamilyIPv4 && f != FamilyIPv6 {
		return netip.Addr{}, nil
	}
	return ipOf(uint8(f), "RTA_VIA", v[2:])
}

// parseNexthops parses an RTA_MULTIPATH value: rtnexthop entries, each
// followed by its own attributes.
func parseNexthops(family uint8, b []byte) ([]Nexthop, error) {
	var out []Nexthop
	err := walk(b, nexthopLayout, func(e []byte) error {
		nh := Nexthop{
			Flags:    e[2],
			Weight:   int(e[3]) + 1,
			OutIndex: binary.NativeEndian.Uint32(e[4:8]),
		}
		err := parseAttrs(e[rtnexthopLen:], func(typ uint16, v []byte) (err error) {
			switch typ {
			case rtaGateway:
				nh.Gateway, err = ipOf(family, "RTA_GATEWAY in RTA_MULTIPATH", v)
			case rtaVia:
				nh.Gateway, err = via(v)
			}
			return err
		})
		out = append(out, nh)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DumpAddrs returns the addresses of the given family (0 for all, else
// FamilyIPv4 or FamilyIPv6) from an RTM_GETADDR dump.
//
// The netlink socket is created in the network namespace of the calling OS
// thread: to read another namespace, lock the goroutine to its thread with
// runtime.LockOSThread and enter the namespace with setns first.
//
// It needs Linux; elsewhere it returns an error wrapping
// errors.ErrUnsupported.
func DumpAddrs(family uint8) ([]Addr, error) { return dumpAddrs(family) }

// DumpRoutes returns the routes of the given family (0 for all, else
// FamilyIPv4 or FamilyIPv6) in all routing tables from an RTM_GETROUTE dump.
// Cached (cloned) routes are not included.
//
// The socket is created in the calling thread's network namespace, as for
// [DumpAddrs]. It needs Linux; elsewhere it returns an error wrapping
// errors.ErrUnsupported.
func DumpRoutes(family uint8) ([]Route, error) { return dumpRoutes(family) }

// BestDefault returns, among routes, the unicast default route of the main
// table for family with the lowest metric that ok accepts (nil ok: any).
func BestDefault(routes []Route, family uint8, ok func(Route) bool) (Route, bool) {
	var best Route
	found := false
	for _, r := range routes {
		if r.Family != family || r.DstLen != 0 || r.Table != TableMain || r.Type != TypeUnicast || (ok != nil && !ok(r)) {
			continue
		}
		if !found || r.Priority < best.Priority {
			best, found = r, true
		}
	}
	return best, found
}
