//go:build !linux

package p2pd

import (
	"net"
	"net/netip"
)

// interfaces lists interfaces through the net package. Address flags are
// not available there and are left zero.
func interfaces() ([]Interface, error) {
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
			if ip.Is4In6() {
				ip = ip.Unmap()
			}
			bits, _ := n.Mask.Size()
			ifc.Addrs = append(ifc.Addrs, IfAddr{Addr: zoned(ip, ifc.Name), Bits: bits})
		}
		list = append(list, ifc)
	}
	return list, nil
}

// defaultIndex asks the kernel which source address a UDP socket connected to
// a documentation address would use, and returns the interface holding it.
// Connecting a UDP socket sends no packet.
func defaultIndex(f Family) (int, error) {
	dst := "192.0.2.1:9"
	if f == IPv6 {
		dst = "[2001:db8::1]:9"
	}
	c, err := net.Dial(Proto(UDP).network(f), dst)
	if err != nil {
		return 0, ErrNoDefaultRoute
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	c.Close()
	list, err := interfaces()
	if err != nil {
		return 0, err
	}
	for _, ifc := range list {
		for _, a := range ifc.Addrs {
			if a.Addr.WithZone("") == local.WithZone("") {
				return ifc.Index, nil
			}
		}
	}
	return 0, ErrNoDefaultRoute
}
