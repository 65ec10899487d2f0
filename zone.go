package p2pd

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Addresses: interface names used as IPv6 zones, resolved in the calling
// thread's network namespace; IPv4-mapped IPv6 addresses unmapped; zoned
// and zone-less addresses compared.

// resolveZone replaces an interface name used as zone by the interface's
// current index, read from the kernel on the calling thread (so in its
// network namespace). The net package would use a process-wide name cache,
// stale once an interface is recreated under the same name or when threads
// sit in other namespaces.
func resolveZone(ap netip.AddrPort) (netip.AddrPort, error) {
	z := ap.Addr().Zone()
	if z == "" {
		return ap, nil
	}
	if _, err := strconv.Atoi(z); err == nil {
		return ap, nil
	}
	ifc, err := net.InterfaceByName(z)
	if err != nil {
		return ap, &InterfaceError{Op: "lookup", Name: z, Err: fmt.Errorf("%w: %v", ErrNoInterface, err)}
	}
	return netip.AddrPortFrom(ap.Addr().WithZone(strconv.Itoa(ifc.Index)), ap.Port()), nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return ap
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return unmap(ap)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

func sameAddr(a, b netip.AddrPort) bool {
	if a == b {
		return true // the common case, before the unmapping
	}
	a, b = unmap(a), unmap(b)
	if a == b {
		return true
	}
	return a.Port() == b.Port() && (a.Addr().Zone() == "" || b.Addr().Zone() == "") &&
		a.Addr().WithZone("") == b.Addr().WithZone("")
}
