package p2pd

import (
	"net"
	"net/netip"
)

// The portable ways to see interfaces, used where no kernel-specific reader
// exists (iface_other.go) and tested on every platform.

// interfacesNet lists interfaces through the net package. Address flags are
// not available there and are left zero.
func interfacesNet() ([]Interface, error) {
	links, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	list := make([]Interface, 0, len(links))
	for _, l := range links {
		ifc := fromNet(l)
		addrs, err := l.Addrs()
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			bits, _ := n.Mask.Size()
			ifc.Addrs = append(ifc.Addrs, IfAddr{Addr: zoned(ip.Unmap(), ifc.Name), Bits: bits})
		}
		list = append(list, ifc)
	}
	return list, nil
}

// defaultIndexDial asks the kernel which source address a UDP socket
// connected to a documentation address would use, and returns the index of
// the interface holding it. Connecting a UDP socket sends no packet.
func defaultIndexDial(f Family, list []Interface) (int, error) {
	dst := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 9)
	if f == IPv6 {
		dst = netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1"), 9)
	}
	c, err := net.DialUDP(UDP.network(f), nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return 0, ErrNoDefaultRoute
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap().WithZone("")
	c.Close()
	for _, ifc := range list {
		for _, a := range ifc.Addrs {
			if a.Addr.WithZone("") == local {
				return ifc.Index, nil
			}
		}
	}
	return 0, ErrNoDefaultRoute
}
