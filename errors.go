package p2pd

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Sentinel errors. Test for them with errors.Is: the errors returned by this
// package wrap them with details.
var (
	// ErrDaemonClosed is returned by calls on a Daemon after Close or Shutdown.
	ErrDaemonClosed = errors.New("p2pd: daemon closed")
	// ErrUnsupported is returned where the platform lacks a feature.
	ErrUnsupported = errors.New("p2pd: not supported on this platform")
	// ErrNoInterface is returned when no interface matches a name or index.
	ErrNoInterface = errors.New("p2pd: no such interface")
	// ErrNoDefaultRoute is returned when the routing table has no default
	// route for a family.
	ErrNoDefaultRoute = errors.New("p2pd: no default route")
	// ErrBadFamily is returned for a family value that is not IPv4, IPv6 or
	// AnyFamily where any is allowed.
	ErrBadFamily = errors.New("p2pd: bad address family")
	// ErrFamilyUnsupported is returned when a target cannot serve a family
	// (an interface with no usable address of it, or a route of the other
	// family).
	ErrFamilyUnsupported = errors.New("p2pd: address family not supported by target")
	// ErrAddrNotOnRoute is returned when a bind names an address that the
	// route does not hold.
	ErrAddrNotOnRoute = errors.New("p2pd: address not on route")
	// ErrNoAddress is returned when a route or interface has no address to bind.
	ErrNoAddress = errors.New("p2pd: no address to bind")
	// ErrInvalid is returned for malformed input such as bad JSON values.
	ErrInvalid = errors.New("p2pd: invalid value")
	// ErrAddrGone reports a listener whose address is no longer on any
	// interface (see Event).
	ErrAddrGone = errors.New("p2pd: address removed")
	// ErrDADFailed reports an IPv6 address that duplicate address detection
	// found in use by another host: it can never be bound.
	ErrDADFailed = errors.New("p2pd: duplicate address (DAD failed)")
	// ErrTentative reports an IPv6 address still in duplicate address
	// detection when Listen stopped waiting for it.
	ErrTentative = errors.New("p2pd: address tentative (DAD still running)")
	// ErrLinkDown reports a listener whose address is on an interface that
	// is down (see Event).
	ErrLinkDown = errors.New("p2pd: interface down")
)

// InterfaceError reports a failed interface operation.
type InterfaceError struct {
	Op    string // "lookup", "list", "default"
	Name  string // interface name, if known
	Index int    // interface index, if known
	Err   error
}

func (e *InterfaceError) Error() string {
	s := "p2pd: interface " + e.Op
	if e.Name != "" {
		s += " " + e.Name
	} else if e.Index != 0 {
		s += fmt.Sprintf(" #%d", e.Index)
	}
	return s + ": " + trimPrefix(e.Err)
}

func (e *InterfaceError) Unwrap() error { return e.Err }

// AddrError reports an address that cannot be used as asked.
type AddrError struct {
	Op   string // "bind"
	Addr netip.Addr
	Err  error
}

func (e *AddrError) Error() string {
	return "p2pd: " + e.Op + " " + e.Addr.String() + ": " + trimPrefix(e.Err)
}

func (e *AddrError) Unwrap() error { return e.Err }

// trimPrefix is err's text without "p2pd: " (leading or nested), for the
// text of an error that wraps it and says "p2pd: " itself.
func trimPrefix(err error) string {
	if err == nil {
		return "<nil>"
	}
	return strings.ReplaceAll(err.Error(), "p2pd: ", "")
}

// errorf is fmt.Errorf for p2pd's own messages, whose format starts with
// "p2pd: ": the p2pd errors it wraps lose their own "p2pd: ", so that the
// text says it once ("p2pd: bind ...: invalid value", not "p2pd: bind
// ...: p2pd: invalid value"). errors.Is and errors.As see through it.
func errorf(format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	if rest, ok := strings.CutPrefix(err.Error(), "p2pd: "); ok && strings.Contains(rest, "p2pd: ") {
		return &textError{msg: "p2pd: " + strings.ReplaceAll(rest, "p2pd: ", ""), err: err}
	}
	return err
}

// textError is an error with its text made once.
type textError struct {
	msg string
	err error
}

func (e *textError) Error() string { return e.msg }
func (e *textError) Unwrap() error { return e.err }
