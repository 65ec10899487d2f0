package mmsg

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CtrlSize is the control-message room of one datagram: enough for one
// IP_PKTINFO or IPV6_PKTINFO.
const CtrlSize = 64

const ptrSize = int(unsafe.Sizeof(uintptr(0)))

func align(n int) int { return (n + ptrSize - 1) &^ (ptrSize - 1) }

// Pktinfo is what IP_PKTINFO or IPV6_PKTINFO says of a datagram received.
type Pktinfo struct {
	Dst     netip.Addr // the address the datagram was sent to
	Local   netip.Addr // the local address to answer from (IPv4: ipi_spec_dst, else a unicast Dst; IPv6: a unicast Dst); invalid if none
	IfIndex int        // the interface it arrived on
}

// ParsePktinfo finds IP_PKTINFO or IPV6_PKTINFO in the control data b
// (Linux layout). ok is false when there is none or b is malformed.
func ParsePktinfo(b []byte) (pi Pktinfo, ok bool) {
	hdr := unix.SizeofCmsghdr
	for len(b) >= hdr {
		var l int
		if ptrSize == 8 {
			l64 := binary.NativeEndian.Uint64(b)
			if l64 > uint64(len(b)) {
				return pi, false
			}
			l = int(l64)
		} else {
			l = int(binary.NativeEndian.Uint32(b))
		}
		if l < hdr || l > len(b) {
			return pi, false
		}
		level := int32(binary.NativeEndian.Uint32(b[ptrSize:]))
		typ := int32(binary.NativeEndian.Uint32(b[ptrSize+4:]))
		data := b[hdr:l]
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi.IfIndex = int(int32(binary.NativeEndian.Uint32(data)))
			pi.Local = netip.AddrFrom4([4]byte(data[4:8]))
			pi.Dst = netip.AddrFrom4([4]byte(data[8:12]))
			if pi.Local.IsUnspecified() && !pi.Dst.IsMulticast() && pi.Dst != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				// Zero for a datagram queued before IP_PKTINFO was set (an
				// adopted socket): a unicast destination is the answer.
				pi.Local = pi.Dst
			}
			return pi, true
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi.Dst = netip.AddrFrom16([16]byte(data[:16])).Unmap()
			if !pi.Dst.IsMulticast() {
				pi.Local = pi.Dst // a multicast destination is no source
			}
			pi.IfIndex = int(binary.NativeEndian.Uint32(data[16:]))
			return pi, true
		}
		b = b[min(align(l), len(b)):]
	}
	return pi, false
}

// PutPktinfo writes into b (at least CtrlSize bytes) the control message
// that sends a datagram from src through interface ifindex (0: let the
// routing choose), and returns its length; 0 if src is not an address.
func PutPktinfo(b []byte, src netip.Addr, ifindex int) int {
	var level, typ, dlen int
	switch {
	case src.Is4():
		level, typ, dlen = unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo
	case src.Is6():
		level, typ, dlen = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo
	default:
		return 0
	}
	hdr := unix.SizeofCmsghdr
	l := hdr + dlen
	space := align(l)
	clear(b[:space])
	if ptrSize == 8 {
		binary.NativeEndian.PutUint64(b, uint64(l))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(l))
	}
	binary.NativeEndian.PutUint32(b[ptrSize:], uint32(level))
	binary.NativeEndian.PutUint32(b[ptrSize+4:], uint32(typ))
	d := b[hdr:]
	if src.Is4() {
		binary.NativeEndian.PutUint32(d, uint32(ifindex))
		a := src.As4()
		copy(d[4:8], a[:]) // ipi_spec_dst: the source address
	} else {
		a := src.As16()
		copy(d[:16], a[:])
		binary.NativeEndian.PutUint32(d[16:], uint32(ifindex))
	}
	return space
}
