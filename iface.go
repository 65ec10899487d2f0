package p2pd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Scope classifies an address by where it can be reached from.
type Scope uint8

// Address scopes, from the address alone (not the kernel's scope field).
const (
	ScopeOther     Scope = iota // unspecified, multicast, or anything not below
	ScopeLoopback               // 127.0.0.0/8, ::1
	ScopeLinkLocal              // 169.254.0.0/16, fe80::/10
	ScopePrivate                // RFC 1918, 100.64.0.0/10 (carrier-grade NAT), fc00::/7 (ULA)
	ScopeGlobal                 // every other unicast address
)

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// ScopeOf returns the scope of a.
func ScopeOf(a netip.Addr) Scope {
	a = a.Unmap()
	switch {
	case !a.IsValid() || a.IsUnspecified() || a.IsMulticast():
		return ScopeOther
	case a.IsLoopback():
		return ScopeLoopback
	case a.IsLinkLocalUnicast():
		return ScopeLinkLocal
	case a.IsPrivate() || cgnat.Contains(a):
		return ScopePrivate
	case a.IsGlobalUnicast():
		return ScopeGlobal
	}
	return ScopeOther
}

var scopeNames = [...]string{"other", "loopback", "link-local", "private", "global"}

// String returns "loopback", "link-local", "private", "global" or "other".
func (s Scope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return fmt.Sprintf("Scope(%d)", uint8(s))
}

// AddrFlags are an address's state bits, as Linux reports them. Elsewhere they
// are zero.
type AddrFlags uint16

// Address flags.
const (
	AddrTentative  AddrFlags = 1 << iota // IPv6 duplicate address detection still running: not usable yet
	AddrDADFailed                        // IPv6 duplicate address detection found a duplicate: never usable
	AddrDeprecated                       // preferred lifetime over: still receives, not chosen for new outgoing traffic
	AddrTemporary                        // IPv6 privacy address (RFC 8981): rotates
	AddrPermanent                        // set by an administrator, not by autoconfiguration
	AddrOptimistic                       // IPv6 optimistic DAD (RFC 4429): usable while DAD runs
	AddrNoDAD                            // added without duplicate address detection
)

var addrFlagNames = [...]string{"tentative", "dadfailed", "deprecated", "temporary", "permanent", "optimistic", "nodad"}

// String lists the set flags joined by "|", or "" when none is set.
func (f AddrFlags) String() string {
	var parts []string
	for i, n := range addrFlagNames {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	return strings.Join(parts, "|")
}

func parseAddrFlags(s string) (AddrFlags, error) {
	var f AddrFlags
	if s == "" {
		return 0, nil
	}
	for part := range strings.SplitSeq(s, "|") {
		i := slices.Index(addrFlagNames[:], part)
		if i < 0 {
			return 0, errorf("p2pd: %w: address flag %q", ErrInvalid, part)
		}
		f |= 1 << i
	}
	return f, nil
}

// IfAddr is one address of an interface.
type IfAddr struct {
	Addr  netip.Addr // IPv6 link-local addresses carry the interface name as zone
	Bits  int        // prefix length
	Flags AddrFlags
}

// Prefix returns the address with its prefix length (not masked, no zone).
func (a IfAddr) Prefix() netip.Prefix { return netip.PrefixFrom(a.Addr.WithZone(""), a.Bits) }

// Scope returns the scope of the address.
func (a IfAddr) Scope() Scope { return ScopeOf(a.Addr) }

// Usable reports whether a socket can bind to the address now: it is not
// tentative (unless optimistic) and did not fail duplicate address detection.
func (a IfAddr) Usable() bool {
	if a.Flags&AddrDADFailed != 0 {
		return false
	}
	return a.Flags&AddrTentative == 0 || a.Flags&AddrOptimistic != 0
}

// servable reports whether the address belongs in a route: usable, and not a
// temporary privacy address (those rotate, so peers cannot keep reaching a
// server on one).
func (a IfAddr) servable() bool {
	return a.Usable() && a.Flags&AddrTemporary == 0 && ScopeOf(a.Addr) != ScopeOther
}

func (a IfAddr) String() string {
	s := a.Addr.String() + "/" + fmt.Sprint(a.Bits)
	if a.Flags != 0 {
		s += " " + a.Flags.String()
	}
	return s
}

// Interface is a network interface as the daemon sees it: its link, every
// address with its state, and its route pools, one per family.
//
// Interfaces, InterfaceByName and InterfaceByIndex build the route pools with
// the OfflineResolver; call Resolve to find external addresses.
type Interface struct {
	Name         string
	Index        int
	Flags        net.Flags
	MTU          int
	HardwareAddr net.HardwareAddr
	Addrs        []IfAddr
	Routes4      RoutePool
	Routes6      RoutePool
}

// Interfaces lists the machine's interfaces in index order. On Linux the
// addresses and their flags come from the kernel over rtnetlink, in the
// network namespace of the calling thread.
func Interfaces() ([]Interface, error) {
	list, err := interfaces()
	if err != nil {
		return nil, &InterfaceError{Op: "list", Err: err}
	}
	for i := range list {
		list[i].Routes4, list[i].Routes6, _ = buildRoutes(context.Background(), &list[i], OfflineResolver{})
	}
	return list, nil
}

// InterfaceByName returns the interface called name. The error wraps
// ErrNoInterface when there is none.
func InterfaceByName(name string) (*Interface, error) {
	return lookup(&InterfaceError{Op: "lookup", Name: name}, func(i *Interface) bool { return i.Name == name })
}

// InterfaceByIndex returns the interface with the given index. The error wraps
// ErrNoInterface when there is none.
func InterfaceByIndex(index int) (*Interface, error) {
	return lookup(&InterfaceError{Op: "lookup", Index: index}, func(i *Interface) bool { return i.Index == index })
}

func lookup(e *InterfaceError, match func(*Interface) bool) (*Interface, error) {
	if e.Name == "" && e.Index <= 0 {
		e.Err = fmt.Errorf("%w: empty name or index %d", ErrInvalid, e.Index)
		return nil, e
	}
	list, err := Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range list {
		if match(&list[i]) {
			return &list[i], nil
		}
	}
	e.Err = ErrNoInterface
	return nil, e
}

// DefaultInterface returns the interface of the default route of family f. On
// Linux it reads the kernel's main routing table and takes the default route
// with the lowest metric. Elsewhere it asks the kernel which local address a
// UDP socket connected to a documentation address (192.0.2.1, 2001:db8::1)
// would use; connecting a UDP socket sends nothing. With AnyFamily it tries
// IPv4, then IPv6. The error wraps ErrNoDefaultRoute when there is none.
func DefaultInterface(f Family) (*Interface, error) {
	fams, err := f.families()
	if err != nil {
		return nil, &InterfaceError{Op: "default", Err: err}
	}
	for _, fam := range fams {
		idx, err := defaultIndex(fam)
		if err != nil {
			if len(fams) > 1 && fam == IPv4 {
				continue
			}
			return nil, &InterfaceError{Op: "default", Err: fmt.Errorf("%s: %w", fam, err)}
		}
		return InterfaceByIndex(idx)
	}
	return nil, &InterfaceError{Op: "default", Err: ErrNoDefaultRoute}
}

// IsUp reports whether the interface is administratively up.
func (i *Interface) IsUp() bool { return i.Flags&net.FlagUp != 0 }

// Routes returns the route pool of family f (IPv4 or IPv6).
func (i *Interface) Routes(f Family) RoutePool {
	switch f {
	case IPv4:
		return i.Routes4
	case IPv6:
		return i.Routes6
	}
	return nil
}

// Supports reports whether the interface can serve family f. The rule: the
// interface is up and its route pool for f is not empty, that is:
//   - IPv4: it has a usable IPv4 address;
//   - IPv6: it has a usable IPv6 address that is not link-local (global,
//     unique-local or loopback). P2PD also asks for a link-local address; p2pd
//     does not, since tunnels have none and serve IPv6 well. Where a link-local
//     address exists it is served beside the other (see ListenAll).
//
// Usable means not tentative and not failed DAD; temporary privacy addresses
// do not count.
func (i *Interface) Supports(f Family) bool {
	return i.IsUp() && len(i.Routes(f)) > 0
}

// Supported returns the families the interface can serve (see Supports), IPv4
// first.
func (i *Interface) Supported() []Family {
	var fams []Family
	for _, f := range []Family{IPv4, IPv6} {
		if i.Supports(f) {
			fams = append(fams, f)
		}
	}
	return fams
}

// LinkLocals returns the interface's usable IPv6 link-local addresses, zoned.
func (i *Interface) LinkLocals() []netip.Addr {
	var out []netip.Addr
	for _, a := range i.Addrs {
		if a.Addr.Is6() && a.Addr.IsLinkLocalUnicast() && a.Usable() {
			out = append(out, a.Addr)
		}
	}
	return out
}

// Resolve rebuilds the route pools, asking res for the external address of
// each private NIC IP (public ones are their own). On error the interface is
// left as it was.
func (i *Interface) Resolve(ctx context.Context, res ExtResolver) error {
	if res == nil {
		res = OfflineResolver{}
	}
	v4, v6, err := buildRoutes(ctx, i, res)
	if err != nil {
		return err
	}
	i.Routes4, i.Routes6 = v4, v6
	return nil
}

func (i *Interface) String() string {
	return fmt.Sprintf("%d: %s <%v> mtu %d %v", i.Index, i.Name, i.Flags, i.MTU, i.Addrs)
}

// fromNet fills the link fields of an Interface.
func fromNet(n net.Interface) Interface {
	return Interface{Name: n.Name, Index: n.Index, Flags: n.Flags, MTU: n.MTU, HardwareAddr: n.HardwareAddr}
}

// zoned gives IPv6 link-local addresses the interface name as zone and strips
// zones from everything else.
func zoned(a netip.Addr, ifname string) netip.Addr {
	if a.Is6() && a.IsLinkLocalUnicast() && !a.Is4In6() {
		return a.WithZone(ifname)
	}
	return a.WithZone("")
}
