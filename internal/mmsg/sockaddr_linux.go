package mmsg

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sockaddr holds a sockaddr_in or a sockaddr_in6.
type Sockaddr = unix.RawSockaddrInet6

// ParseSockaddr decodes the first n bytes of a sockaddr_in or sockaddr_in6
// (Linux layout, as recvmmsg fills msg_name). It returns the address (an
// IPv4-mapped IPv6 address is unmapped), the port and the IPv6 scope id;
// ok is false for anything else, or when n is too short.
func ParseSockaddr(b []byte, n int) (ap netip.AddrPort, scope uint32, ok bool) {
	if n > len(b) {
		n = len(b)
	}
	if n < 2 {
		return ap, 0, false
	}
	b = b[:n]
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return ap, 0, false
		}
		port := binary.BigEndian.Uint16(b[2:])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), 0, true
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return ap, 0, false
		}
		port := binary.BigEndian.Uint16(b[2:])
		a := netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		return netip.AddrPortFrom(a, port), binary.NativeEndian.Uint32(b[24:]), true
	}
	return ap, 0, false
}

// putSockaddr encodes ap for a socket of the given family (unix.AF_INET or
// unix.AF_INET6; IPv4 goes IPv4-mapped on an IPv6 socket) and returns the
// length. ok is false when ap cannot be sent on such a socket.
func putSockaddr(sa *Sockaddr, family int, ap netip.AddrPort, scope uint32) (n uint32, ok bool) {
	a := ap.Addr()
	switch {
	case family == unix.AF_INET && a.Is4():
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*s4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:], ap.Port())
		return unix.SizeofSockaddrInet4, true
	case family == unix.AF_INET6 && a.IsValid():
		*sa = Sockaddr{Family: unix.AF_INET6, Addr: a.As16(), Scope_id: scope}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		return unix.SizeofSockaddrInet6, true
	}
	return 0, false
}

func sockaddrBytes(sa *Sockaddr) []byte {
	return (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))[:]
}
