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
	var best *rtnl.Route
	for i := range rs {
		r := &rs[i]
		if r.DstLen != 0 || r.Table != 254 || !r.Gateway.IsValid() || r.Gateway.Is4() != (f == p2pd.IPv4) || r.Type != 1 { // RT_TABLE_MAIN, RTN_UNICAST
			continue
		}
		if best == nil || r.Priority < best.Priority {
			best = r
		}
	}
	if best == nil {
		return netip.Addr{}, 0, errNoDefault
	}
	return best.Gateway, int(best.OutIndex), nil
}
