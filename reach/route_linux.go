package reach

import (
	"net/netip"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/rtnl"
)

// defaultGateway is the gateway of the family's default route of the main
// table with the lowest metric, and the interface it is reached through.
func defaultGateway(f p2pd.Family) (netip.Addr, int, error) {
	fam := uint8(rtnl.FamilyIPv4)
	if f == p2pd.IPv6 {
		fam = rtnl.FamilyIPv6
	}
	rs, err := rtnl.DumpRoutes(fam)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	r, ok := rtnl.BestDefault(rs, fam, func(r rtnl.Route) bool {
		gw, _ := hop(r)
		return gw.IsValid() && gw.Is4() == (f == p2pd.IPv4)
	})
	if !ok {
		return netip.Addr{}, 0, errNoDefault
	}
	gw, index := hop(r)
	return gw, index, nil
}

// hop is a route's gateway and output interface, or its first next hop's.
func hop(r rtnl.Route) (netip.Addr, int) {
	if !r.Gateway.IsValid() && len(r.Nexthops) > 0 {
		return r.Nexthops[0].Gateway, int(r.Nexthops[0].OutIndex)
	}
	return r.Gateway, int(r.OutIndex)
}
