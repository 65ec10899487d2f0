package reach

import (
	"net/netip"

	"github.com/p2pd/p2pd/internal/rtnl"
)

// defaultGateway is the gateway of the IPv4 default route of the main
// table with the lowest metric, and the interface it is reached through.
func defaultGateway() (netip.Addr, int, error) {
	rs, err := rtnl.DumpRoutes(rtnl.FamilyIPv4)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	var best *rtnl.Route
	for i := range rs {
		r := &rs[i]
		if r.DstLen != 0 || r.Table != 254 || !r.Gateway.Is4() || r.Type != 1 { // RT_TABLE_MAIN, RTN_UNICAST
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
