package stun

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/p2pd/p2pd"
)

// Error says why a Resolver found no external address for a NIC IP.
// It wraps ErrExtUnknown, and the context's error when the context ended the
// lookup.
type Error struct {
	NIC     netip.Addr
	Reason  string   // e.g. "no STUN server answered", "STUN servers disagree"
	Answers []Answer // one per server asked
	ctxErr  error
	config  bool // no server of the family, or Agree too high: not the network's fault
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "p2pd: stun: external address of %v unknown: %s", e.NIC, e.Reason)
	for i, a := range e.Answers {
		if i == 0 {
			b.WriteString(" [")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(a.String())
		if i == len(e.Answers)-1 {
			b.WriteString("]")
		}
	}
	return b.String()
}

// Unwrap returns ErrExtUnknown and, when the context ended the lookup, its
// error.
func (e *Error) Unwrap() []error {
	if e.ctxErr != nil {
		return []error{p2pd.ErrExtUnknown, e.ctxErr}
	}
	return []error{p2pd.ErrExtUnknown}
}

// errSTUNAbandoned marks the servers still being waited for when the others
// decided.
var errAbandoned = errors.New("not waited for: the other answers decided")

// ErrTimeout is the error of a server that did not answer in time.
var ErrTimeout = errors.New("p2pd: stun: no answer")

// ErrNoRFC5780 is returned by ClassifyNAT when the server gives no
// OTHER-ADDRESS: it cannot run the RFC 5780 tests.
var ErrNoRFC5780 = errors.New("p2pd: stun: server does not support RFC 5780 (no OTHER-ADDRESS)")
