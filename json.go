package p2pd

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// JSON forms of interfaces and routes (P2PD's to_dict/from_dict), so a network
// view can be saved and loaded in a test or a config file. Decoding validates
// everything it reads: a value the library could not have produced is an error
// wrapping ErrInvalid.

type ifAddrJSON struct {
	Addr  netip.Addr `json:"addr"`
	Bits  int        `json:"bits"`
	Flags string     `json:"flags,omitempty"`
}

type interfaceJSON struct {
	Name   string                 `json:"name"`
	Index  int                    `json:"index"`
	Flags  string                 `json:"flags"`
	MTU    int                    `json:"mtu"`
	MAC    string                 `json:"mac,omitempty"`
	Addrs  []ifAddrJSON           `json:"addrs"`
	Routes map[Family][]routeJSON `json:"routes"` // absent or null: built from addrs
}

type routeJSON Route // no methods: plain struct-tag coding

// MarshalJSON encodes the route with its tags; see Route's fields.
func (r Route) MarshalJSON() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(routeJSON(r))
}

// UnmarshalJSON decodes and validates a route.
func (r *Route) UnmarshalJSON(b []byte) error {
	var v routeJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return errorf("p2pd: route: %w: %v", ErrInvalid, err)
	}
	if err := Route(v).validate(); err != nil {
		return err
	}
	*r = Route(v)
	return nil
}

// MarshalJSON encodes the interface, its addresses and its route pools.
func (i Interface) MarshalJSON() ([]byte, error) {
	v := interfaceJSON{
		Name: i.Name, Index: i.Index, Flags: i.Flags.String(), MTU: i.MTU,
		Addrs: make([]ifAddrJSON, len(i.Addrs)),
	}
	if len(i.HardwareAddr) > 0 {
		v.MAC = i.HardwareAddr.String()
	}
	for k, a := range i.Addrs {
		v.Addrs[k] = ifAddrJSON{Addr: a.Addr, Bits: a.Bits, Flags: a.Flags.String()}
	}
	v.Routes = map[Family][]routeJSON{} // always written, so decoding never rebuilds them
	for _, f := range []Family{IPv4, IPv6} {
		for _, r := range i.Routes(f) {
			if err := r.validate(); err != nil {
				return nil, err
			}
			v.Routes[f] = append(v.Routes[f], routeJSON(r))
		}
	}
	return json.Marshal(v)
}

// UnmarshalJSON decodes and validates an interface. Link-local addresses
// without a zone get the interface's name. When "routes" is absent the route
// pools are built from the addresses with the OfflineResolver; when present,
// each route must be of its key's family, of this interface, and hold only the
// interface's own addresses as NIC IPs.
func (i *Interface) UnmarshalJSON(b []byte) error {
	var v interfaceJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return errorf("p2pd: interface: %w: %v", ErrInvalid, err)
	}
	bad := func(format string, args ...any) error {
		return errorf("p2pd: interface %q: %w: "+format, append([]any{v.Name, ErrInvalid}, args...)...)
	}
	if v.Name == "" || len(v.Name) > 255 || strings.ContainsAny(v.Name, "%/ \x00") {
		return bad("name")
	}
	if v.Index < 0 || v.MTU < 0 {
		return bad("index %d or mtu %d", v.Index, v.MTU)
	}
	out := Interface{Name: v.Name, Index: v.Index, MTU: v.MTU}
	var err error
	if out.Flags, err = parseNetFlags(v.Flags); err != nil {
		return bad("%v", err)
	}
	if v.MAC != "" {
		if out.HardwareAddr, err = parseHardwareAddr(v.MAC); err != nil {
			return bad("mac %q", v.MAC)
		}
	}
	for _, a := range v.Addrs {
		ip := a.Addr
		if !ip.IsValid() || ip.Is4In6() || a.Bits < 0 || a.Bits > ip.BitLen() {
			return bad("address %v/%d", ip, a.Bits)
		}
		if z := ip.Zone(); z != "" && (!ip.IsLinkLocalUnicast() || z != v.Name) {
			return bad("zone of %v", ip)
		}
		f, err := parseAddrFlags(a.Flags)
		if err != nil {
			return bad("%v", err)
		}
		out.Addrs = append(out.Addrs, IfAddr{Addr: zoned(ip, v.Name), Bits: a.Bits, Flags: f})
	}
	if v.Routes == nil {
		out.Routes4, out.Routes6, _ = buildRoutes(context.Background(), &out, OfflineResolver{})
		*i = out
		return nil
	}
	for f, rs := range v.Routes {
		if f != IPv4 && f != IPv6 {
			return bad("route family %v", f)
		}
		for _, rj := range rs {
			r := Route(rj)
			if r.Interface == "" {
				r.Interface = v.Name
			}
			for k, a := range r.NIC {
				if z := a.Zone(); z != "" && z != v.Name {
					return bad("zone of route NIC IP %v", a)
				}
				r.NIC[k] = zoned(a, v.Name)
			}
			if r.Family != f || r.Interface != v.Name {
				return bad("route %v under %v", r, f)
			}
			if err := r.validate(); err != nil {
				return err
			}
			for _, a := range r.NIC {
				if !slices.ContainsFunc(out.Addrs, func(x IfAddr) bool { return x.Addr == a }) {
					return bad("route NIC IP %v is not an address of the interface", a)
				}
			}
			if f == IPv4 {
				out.Routes4 = append(out.Routes4, r)
			} else {
				out.Routes6 = append(out.Routes6, r)
			}
		}
	}
	*i = out
	return nil
}

var netFlagNames = map[string]net.Flags{
	"up": net.FlagUp, "broadcast": net.FlagBroadcast, "loopback": net.FlagLoopback,
	"pointtopoint": net.FlagPointToPoint, "multicast": net.FlagMulticast, "running": net.FlagRunning,
}

// parseNetFlags reads net.Flags.String's form ("up|broadcast|running").
func parseNetFlags(s string) (net.Flags, error) {
	var f net.Flags
	if s == "" || s == "0" {
		return 0, nil
	}
	for part := range strings.SplitSeq(s, "|") {
		bit, ok := netFlagNames[part]
		if !ok {
			return 0, fmt.Errorf("flag %q", part)
		}
		f |= bit
	}
	return f, nil
}

// parseHardwareAddr reads net.HardwareAddr.String's form (hex bytes joined by
// ":") of any length: tunnels have 4- and 16-byte addresses that net.ParseMAC
// refuses.
func parseHardwareAddr(s string) (net.HardwareAddr, error) {
	parts := strings.Split(s, ":")
	hw := make(net.HardwareAddr, 0, len(parts))
	for _, p := range parts {
		if len(p) != 2 {
			return nil, fmt.Errorf("byte %q", p)
		}
		b, err := hex.DecodeString(p)
		if err != nil {
			return nil, err
		}
		hw = append(hw, b[0])
	}
	return hw, nil
}
