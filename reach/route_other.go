//go:build !linux

package reach

import (
	"net/netip"

	"github.com/p2pd/p2pd"
)

// defaultGateway: only Linux is asked; elsewhere set Config.Gateway.
func defaultGateway(p2pd.Family) (netip.Addr, int, error) {
	return netip.Addr{}, 0, p2pd.ErrUnsupported
}
