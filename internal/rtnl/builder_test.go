package rtnl

import (
	"encoding/binary"
	"net/netip"
)

// Test-only builder of netlink messages: each function returns bytes ready to
// concatenate, padded to the netlink alignment.

func pad(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// nlmsg returns a message of type typ holding the concatenated body parts.
func nlmsg(typ uint16, body ...[]byte) []byte {
	return nlmsgf(typ, 0, 0, cat(body...))
}

// nlmsgf sets the flags and sequence number too.
func nlmsgf(typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body)+3)
	binary.NativeEndian.PutUint32(b[0:4], uint32(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	return pad(append(b, body...))
}

func done() []byte { return nlmsg(nlmsgDone, le32(0)) }

// doneErr returns an NLMSG_DONE carrying -errno.
func doneErr(errno int32) []byte { return nlmsg(nlmsgDone, le32(uint32(-errno))) }

// nlerr returns an NLMSG_ERROR carrying -errno and a copy of a request header.
func nlerr(errno int32) []byte {
	return nlmsg(nlmsgError, le32(uint32(-errno)), make([]byte, nlmsgHdrLen))
}

func le32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func le16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }

// attr returns an rtattr of type typ holding v.
func attr(typ uint16, v ...[]byte) []byte {
	val := cat(v...)
	b := binary.NativeEndian.AppendUint16(nil, uint16(rtattrLen+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	return pad(append(b, val...))
}

// rawAttr returns an rtattr header claiming length n followed by v, unpadded.
func rawAttr(n, typ uint16, v []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, n)
	b = binary.NativeEndian.AppendUint16(b, typ)
	return append(b, v...)
}

func ip(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func ifaddrmsg(family, plen, flags, scope uint8, index uint32) []byte {
	return binary.NativeEndian.AppendUint32([]byte{family, plen, flags, scope}, index)
}

func rtmsg(family, dstLen, srcLen, tos, table, proto, scope, typ uint8, flags uint32) []byte {
	return binary.NativeEndian.AppendUint32([]byte{family, dstLen, srcLen, tos, table, proto, scope, typ}, flags)
}

func cacheinfo(pref, valid uint32) []byte {
	return cat(le32(pref), le32(valid), le32(100), le32(200))
}

// rtnh returns an rtnexthop entry followed by its attributes.
func rtnh(flags, hops uint8, index uint32, attrs ...[]byte) []byte {
	a := cat(attrs...)
	b := binary.NativeEndian.AppendUint16(nil, uint16(rtnexthopLen+len(a)))
	b = append(b, flags, hops)
	b = binary.NativeEndian.AppendUint32(b, index)
	return pad(append(b, a...))
}

// gatewayAttr encodes a as the attribute the parser maps it from: RTA_GATEWAY
// when it has the route's family, else RTA_VIA.
func gatewayAttr(family uint8, a netip.Addr) []byte {
	if familyOf(a) == family {
		return attr(rtaGateway, a.AsSlice())
	}
	return attr(rtaVia, le16(uint16(familyOf(a))), a.AsSlice())
}

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return FamilyIPv4
	}
	return FamilyIPv6
}

// encodeAddrs encodes addrs as an RTM_GETADDR dump reply ending in
// NLMSG_DONE, such that ParseAddrs gives addrs back.
func encodeAddrs(addrs []Addr) []byte {
	var b []byte
	for _, a := range addrs {
		body := ifaddrmsg(a.Family, a.PrefixLen, uint8(a.Flags), a.Scope, a.Index)
		if a.Local.IsValid() {
			body = append(body, attr(ifaLocal, a.Local.AsSlice())...)
			addr := a.Local
			if a.Peer.IsValid() {
				addr = a.Peer
			}
			body = append(body, attr(ifaAddress, addr.AsSlice())...)
		}
		if a.Label != "" {
			body = append(body, attr(ifaLabel, []byte(a.Label), []byte{0})...)
		}
		body = append(body, attr(ifaCacheinfo, cacheinfo(a.Preferred, a.Valid))...)
		body = append(body, attr(ifaFlags, le32(a.Flags))...)
		b = append(b, nlmsgf(rtmNewAddr, 2, 1, body)...) // NLM_F_MULTI
	}
	return append(b, done()...)
}

// encodeRoutes encodes routes as an RTM_GETROUTE dump reply ending in
// NLMSG_DONE, such that ParseRoutes gives routes back.
func encodeRoutes(routes []Route) []byte {
	var b []byte
	for _, r := range routes {
		body := rtmsg(r.Family, r.DstLen, r.SrcLen, r.TOS, uint8(min(r.Table, 252)), r.Protocol, r.Scope, r.Type, r.Flags)
		body = append(body, attr(rtaTable, le32(r.Table))...)
		for _, a := range []struct {
			typ uint16
			ip  netip.Addr
		}{{rtaDst, r.Dst}, {rtaSrc, r.Src}, {rtaPrefSrc, r.PrefSrc}} {
			if a.ip.IsValid() {
				body = append(body, attr(a.typ, a.ip.AsSlice())...)
			}
		}
		if r.Gateway.IsValid() {
			body = append(body, gatewayAttr(r.Family, r.Gateway)...)
		}
		if r.OutIndex != 0 {
			body = append(body, attr(rtaOIF, le32(r.OutIndex))...)
		}
		if r.Priority != 0 {
			body = append(body, attr(rtaPriority, le32(r.Priority))...)
		}
		if len(r.Nexthops) > 0 {
			var mp []byte
			for _, nh := range r.Nexthops {
				var gw []byte
				if nh.Gateway.IsValid() {
					gw = gatewayAttr(r.Family, nh.Gateway)
				}
				mp = append(mp, rtnh(nh.Flags, uint8(nh.Weight-1), nh.OutIndex, gw)...)
			}
			body = append(body, attr(rtaMultipath, mp)...)
		}
		b = append(b, nlmsgf(rtmNewRoute, 2, 1, body)...)
	}
	return append(b, done()...)
}
