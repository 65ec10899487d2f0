package p2pd

import (
	"context"
	"fmt"
)

// A ListenOption is one of a call's own settings, given to ListenAll,
// ListenSpecific or AddListener after the seed's arguments, as P2PD's
// listen_all(targets, ports, protos, af, msg_cb, error_on_af) takes them:
//
//	d.ListenAll(ctx, targets, ports, protos, p2pd.AnyFamily, p2pd.MsgCB(cb), p2pd.ErrorOnAF(true))
//
// Without an option a call takes the Daemon's setting. A call reads them
// once, when it begins; a call in follow mode keeps them for as long as it
// is followed.
type ListenOption func(*policy)

// MsgCB gives the listeners of one call their own callback: every message
// of those listeners and of their connections goes to cb, not to the
// Daemon's OnMsg, and [Daemon.SetOnMsg] leaves them alone. A nil cb leaves
// their messages to subscriptions only.
func MsgCB(cb MsgCallback) ListenOption {
	return func(p *policy) { p.cb, p.ownCB = cb, true }
}

// ErrorOnAF sets P2PD's error_on_af for one ListenAll call (the default is
// Daemon.ErrorOnAF).
func ErrorOnAF(on bool) ListenOption { return func(p *policy) { p.errorOnAF = on } }

// BestEffort sets best effort for one call (the default is
// Daemon.BestEffort).
func BestEffort(on bool) ListenOption { return func(p *policy) { p.bestEffort = on } }

// Follow sets follow mode for one ListenAll call (the default is
// Daemon.Follow).
func Follow(on bool) ListenOption { return func(p *policy) { p.follow = on } }

// begin checks the arguments every listen call has and returns the call's
// policy: the Daemon's fields, then opts.
func (d *Daemon) begin(ctx context.Context, op string, opts []ListenOption) (policy, error) {
	pol := policy{follow: d.Follow, bestEffort: d.BestEffort, errorOnAF: d.ErrorOnAF}
	if ctx == nil {
		return pol, wrapOp(op, errNilContext)
	}
	if d.isClosed() {
		return pol, wrapOp(op, ErrDaemonClosed)
	}
	for _, o := range opts {
		if o == nil {
			return pol, wrapOp(op, fmt.Errorf("%w: nil ListenOption", ErrInvalid))
		}
		o(&pol)
	}
	return pol, nil
}
