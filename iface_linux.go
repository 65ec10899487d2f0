package p2pd

import (
	"net"
	"slices"

	"github.com/p2pd/p2pd/internal/rtnl"
)

func interfaces() ([]Interface, error) {
	links, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	addrs, err := rtnl.DumpAddrs(0)
	if err != nil {
		return nil, err
	}
	byIndex := make(map[int]int, len(links))
	list := make([]Interface, 0, len(links))
	for _, l := range links {
		byIndex[l.Index] = len(list)
		list = append(list, fromNet(l))
	}
	for _, a := range addrs {
		i, ok := byIndex[int(a.Index)]
		if !ok || !a.Local.IsValid() {
			continue // the link came or went between the two dumps
		}
		ifc := &list[i]
		ifc.Addrs = append(ifc.Addrs, IfAddr{
			Addr:  zoned(a.Local, ifc.Name),
			Bits:  int(a.PrefixLen),
			Flags: addrFlagsFromKernel(a.Flags, a.Family),
		})
	}
	slices.SortFunc(list, func(a, b Interface) int { return a.Index - b.Index })
	return list, nil
}

// addrFlagsFromKernel maps IFA_F_* bits. Bit 0x01 is "temporary" for IPv6
// but "secondary" for IPv4 (same value, IFA_F_SECONDARY), so it only counts
// for IPv6.
func addrFlagsFromKernel(k uint32, af uint8) AddrFlags {
	if af != 10 { // AF_INET6
		k &^= rtnl.FlagTemporary
	}
	var f AddrFlags
	for _, m := range [...]struct {
		k uint32
		f AddrFlags
	}{
		{rtnl.FlagTentative, AddrTentative},
		{rtnl.FlagDADFailed, AddrDADFailed},
		{rtnl.FlagDeprecated, AddrDeprecated},
		{rtnl.FlagTemporary, AddrTemporary},
		{rtnl.FlagPermanent, AddrPermanent},
		{rtnl.FlagOptimistic, AddrOptimistic},
		{rtnl.FlagNoDAD, AddrNoDAD},
	} {
		if k&m.k != 0 {
			f |= m.f
		}
	}
	return f
}

// defaultIndex returns the output interface of the main table's default
// route for f with the lowest metric.
func defaultIndex(f Family) (int, error) {
	af := uint8(2) // AF_INET
	if f == IPv6 {
		af = 10 // AF_INET6
	}
	routes, err := rtnl.DumpRoutes(af)
	if err != nil {
		return 0, err
	}
	r, ok := rtnl.BestDefault(routes, af, func(r rtnl.Route) bool { return outIndex(r) != 0 })
	if !ok {
		return 0, ErrNoDefaultRoute
	}
	return outIndex(r), nil
}

// outIndex is a route's output interface, or its first next hop's.
func outIndex(r rtnl.Route) int {
	if r.OutIndex == 0 && len(r.Nexthops) > 0 {
		return int(r.Nexthops[0].OutIndex)
	}
	return int(r.OutIndex)
}
