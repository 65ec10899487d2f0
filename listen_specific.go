package p2pd

import (
	"context"
	"fmt"
)

// Specific is one listener to open: a protocol on a bound route. The route's
// Bound address is used exactly as it is, including the wildcard (0.0.0.0,
// ::) and loopback that [Route.Bind] gives for "*" and "localhost", and port 0
// (the OS chooses). [Daemon.PlanAll] returns the Specifics ListenAll would
// open.
type Specific struct {
	Route Route
	Proto Proto
}

// String returns e.g. "TCP [fe80::1%eth0]:10000".
func (s Specific) String() string {
	return fmt.Sprintf("%v %v", s.Proto, s.Route.Bound)
}

// ListenSpecific opens one listener per entry, on the entry's route exactly
// as bound (P2PD's listen_specific): a NIC IP, an IPv6 link-local address
// with its zone, the wildcard (Route.Bind("*", port)) or the loopback
// (Route.Bind("localhost", port)). An unbound route is bound to its default
// address with port 0, as [Listen] does. The guard, all-or-nothing and best
// effort work as for [Daemon.ListenAll]; the wildcard and a specific address
// of the same port and protocol conflict as the OS decides (on Linux, TCP
// refuses the second with ErrAddrInUse).
// opts are the call's own settings, as for ListenAll: [MsgCB] and
// [BestEffort] apply ([ErrorOnAF] and [Follow] have nothing to do here).
func (d *Daemon) ListenSpecific(ctx context.Context, specs []Specific, opts ...ListenOption) ([]*Pipe, error) {
	return d.listenSpecific(ctx, "listen specific", specs, opts)
}

func (d *Daemon) listenSpecific(ctx context.Context, op string, specs []Specific, opts []ListenOption) ([]*Pipe, error) {
	pol, err := d.begin(ctx, op, opts)
	if err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, wrapOp(op, fmt.Errorf("%w: nothing to listen on", ErrInvalid))
	}
	specs, err = checkSpecifics(op, specs)
	if err != nil {
		return nil, err
	}
	if err := d.reserve(op, len(specs)); err != nil {
		return nil, err
	}
	defer d.release(len(specs))
	return d.open(ctx, op, specs, pol)
}

// AddListener opens one listener for proto on route r, as bound (an unbound
// route is bound to its default address with port 0, as [Listen] does). It
// is ListenSpecific with one entry. On failure the error is a *ListenError
// whose Failed holds the *BindError.
func (d *Daemon) AddListener(ctx context.Context, proto Proto, r Route, opts ...ListenOption) (*Pipe, error) {
	ps, err := d.listenSpecific(ctx, "add listener", []Specific{{Route: r, Proto: proto}}, opts)
	if len(ps) == 1 {
		return ps[0], err
	}
	return nil, err
}
