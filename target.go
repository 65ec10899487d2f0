package p2pd

import (
	"fmt"
	"net/netip"
)

// Target is what [Daemon.ListenAll] serves: an *[Interface], a [Route] or a
// [RoutePool]. The set is closed (the interface has an unexported method);
// each kind says below which addresses it binds.
//
//   - *Interface: for each family, its first route (Routes4[0] or
//     Routes6[0]) as a Route target would; a family the interface does not
//     [Interface.Supports] is not served. To serve every route of an
//     interface, pass its pool (i.Routes4, i.Routes6) instead.
//   - Route: its default NIC IP ([Route.Addr]) and, for IPv6, its
//     link-local NIC IP ([Route.LinkLocal]) with zone. Only its own family is
//     served. A bound route's Bound address is ignored: the route is the
//     template (NIC IPs, EXT IPs, interface) of the listeners' routes.
//   - RoutePool: every route of the pool, each as a Route target.
type Target interface {
	// listenRoutes returns the routes of family f that the target serves;
	// none when it does not serve f. err reports a malformed target.
	listenRoutes(f Family) (RoutePool, error)
	// targetString describes the target in errors.
	targetString() string
}

var (
	_ Target = (*Interface)(nil)
	_ Target = Route{}
	_ Target = RoutePool(nil)
)

func (i *Interface) listenRoutes(f Family) (RoutePool, error) {
	if i == nil {
		return nil, fmt.Errorf("%w: nil *Interface target", ErrInvalid)
	}
	if !i.Supports(f) {
		return nil, nil
	}
	return i.Routes(f)[:1], nil
}

func (i *Interface) targetString() string {
	if i == nil {
		return "interface <nil>"
	}
	return "interface " + i.Name
}

func (r Route) listenRoutes(f Family) (RoutePool, error) {
	if err := r.checkFamily(); err != nil {
		return nil, err
	}
	if r.Family != f {
		return nil, nil
	}
	return RoutePool{r}, nil
}

func (r Route) targetString() string {
	return fmt.Sprintf("%s route %v on %q", r.Family, r.NIC, r.Interface)
}

func (p RoutePool) listenRoutes(f Family) (RoutePool, error) {
	var out RoutePool
	for _, r := range p {
		rs, err := r.listenRoutes(f)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

func (p RoutePool) targetString() string {
	return fmt.Sprintf("route pool of %d", len(p))
}

// listenAddrs returns the addresses ListenAll binds on r: its default NIC IP
// and, for IPv6, its link-local NIC IP when it has one that is not the
// default already. Link-local addresses get the route's interface as zone
// when they have none (as [Route.BindIP] does); others never carry a zone.
func (r Route) listenAddrs() []netip.Addr {
	var out []netip.Addr
	if a := r.Addr(); a.IsValid() {
		out = append(out, a)
	}
	if r.Family == IPv6 {
		if ll := r.LinkLocal(); ll.IsValid() && (len(out) == 0 || ll.WithZone("") != out[0].WithZone("")) {
			out = append(out, ll)
		}
	}
	return out
}
