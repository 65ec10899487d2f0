package p2pd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/p2pd/p2pd/internal/errtext"
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
	// ErrBadPort is wrapped by every error about a port or a port list; a
	// *PortError gives the details.
	ErrBadPort = errors.New("p2pd: bad port")
	// ErrNoRoute is returned when a RoutePool has no route to offer.
	ErrNoRoute = errors.New("p2pd: no route")
	// ErrExtUnknown is returned by an ExtResolver that cannot find an address.
	ErrExtUnknown = errors.New("p2pd: external address unknown")
	// ErrTooManyListeners is wrapped by the *LimitError a call returns when
	// it would take the daemon over its MaxListeners.
	ErrTooManyListeners = errors.New("p2pd: too many listeners")
	// ErrSocketUnsupported: a socket given to Daemon.Adopt is not one a
	// Daemon can serve: a listening TCP socket (SOCK_STREAM, listening) or a
	// UDP socket (SOCK_DGRAM), IPv4 or IPv6. Unix sockets, connected stream
	// sockets (a systemd socket unit with Accept=yes), FIFOs, netlink,
	// sequential packet and raw sockets are refused.
	ErrSocketUnsupported = errors.New("p2pd: unsupported socket")
)

// Pipe errors. Test for them with errors.Is: returned errors may wrap them
// with details.
var (
	// ErrPipeClosed is returned by calls on a pipe that has been closed,
	// including Recv and Accept calls pending when it closes.
	ErrPipeClosed = errors.New("p2pd: pipe closed")
	// ErrNoClient is returned by Send on a TCP server pipe when no
	// connected client has the given address.
	ErrNoClient = errors.New("p2pd: no client with that address")
	// ErrIdleTimeout ends a TCP connection idle for PipeConfig.IdleTimeout.
	ErrIdleTimeout = errors.New("p2pd: idle timeout")
	// ErrReadTimeout ends a TCP connection whose message took longer than
	// PipeConfig.ReadTimeout to arrive.
	ErrReadTimeout = errors.New("p2pd: read timeout")
	// ErrFrameTooLarge ends a TCP connection that receives a frame larger
	// than PipeConfig.MaxMsgSize; Send returns it for a message too large
	// to frame.
	ErrFrameTooLarge = errors.New("p2pd: frame too large")
	// ErrBadFrame ends a TCP connection that receives a malformed frame:
	// one cut short by the end of the connection.
	ErrBadFrame = errors.New("p2pd: bad frame")
	// ErrWriteTimeout ends a TCP connection whose peer took none of a
	// message Send was writing for PipeConfig.WriteTimeout; that Send
	// returns an error wrapping it.
	ErrWriteTimeout = errors.New("p2pd: write timeout")
	// ErrEvicted ends a TCP connection that had received nothing for the
	// longest when a new one came to a full server (see PipeConfig.MaxConns).
	ErrEvicted = errors.New("p2pd: evicted for a new connection")
	// ErrOverBudget ends a TCP connection whose partial frame would take
	// the bytes buffered for partial frames over PipeConfig.MaxBuffered.
	ErrOverBudget = errors.New("p2pd: partial frames over budget")
	// ErrAddrInUse is wrapped by a BindError when the address is taken
	// (EADDRINUSE); the system error is wrapped too.
	ErrAddrInUse = errors.New("p2pd: address in use")
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

// BindError reports a server pipe that could not be opened on an address.
type BindError struct {
	Family Family
	Proto  Proto
	Addr   netip.AddrPort // invalid when the route could not be bound
	Err    error
}

func (e *BindError) Error() string {
	a := "route"
	if e.Addr.IsValid() {
		a = e.Addr.String()
	}
	return "p2pd: bind " + e.Proto.String() + " " + a + ": " + trimPrefix(e.Err)
}

func (e *BindError) Unwrap() error { return e.Err }

// inUseError is a system EADDRINUSE error that also matches ErrAddrInUse.
type inUseError struct{ err error }

func (e *inUseError) Error() string   { return e.err.Error() }
func (e *inUseError) Unwrap() []error { return []error{ErrAddrInUse, e.err} }

func newBindError(f Family, proto Proto, addr netip.AddrPort, err error) *BindError {
	return &BindError{Family: f, Proto: proto, Addr: addr, Err: sysError(err)}
}

// DialError reports a client pipe that could not be opened.
type DialError struct {
	Proto Proto
	Host  string         // as given to Dial
	Port  uint16         // as given to Dial
	Local netip.AddrPort // the local address asked for; invalid when the system chooses
	Err   error
}

func (e *DialError) Error() string {
	s := "p2pd: dial " + e.Proto.String() + " " + net.JoinHostPort(e.Host, strconv.Itoa(int(e.Port)))
	if e.Local.IsValid() {
		s += " from " + e.Local.String()
	}
	return s + ": " + trimPrefix(e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// sysError is a failed socket call's err as a BindError or DialError holds
// it: the system's errno alone when there is one (the net package's
// wrapping repeats what those errors say), and for EADDRINUSE one that
// also matches ErrAddrInUse.
func sysError(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		err = errno
	}
	if isAddrInUse(err) {
		err = &inUseError{err}
	}
	return err
}

// errNilContext is the error of a call given a nil context.
var errNilContext = fmt.Errorf("%w: nil context", ErrInvalid)

// trimPrefix is err's text without "p2pd: " (see errtext.Trim).
func trimPrefix(err error) string { return errtext.Trim(err) }

// errorf is fmt.Errorf for p2pd's own messages, whose format starts with
// "p2pd: ", saying it once (see errtext.Errorf).
func errorf(format string, a ...any) error { return errtext.Errorf(format, a...) }

// LimitError reports a call refused by the listener guard before anything
// was bound.
type LimitError struct {
	Op    string // "listen all", "listen specific", "add listener"
	Want  int    // listeners the call would open
	Have  int    // listeners the daemon held (or had reserved) at the time
	Limit int    // the daemon's limit
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("p2pd: %s: too many listeners: the call would open %d, the daemon holds %d, limit %d (see Daemon.MaxListeners)",
		e.Op, e.Want, e.Have, e.Limit)
}

// Unwrap returns ErrTooManyListeners.
func (e *LimitError) Unwrap() error { return ErrTooManyListeners }

// AdoptError reports a socket that [Daemon.Adopt] cannot serve. Err wraps
// ErrSocketUnsupported, ErrAddrInUse or ErrInvalid, or is the system's
// error.
type AdoptError struct {
	Name string // the File's name (for socket activation, its LISTEN_FDNAMES entry)
	FD   int    // its descriptor number; -1 when unknown
	Kind string // what it is, e.g. "unix stream", "ipv4 stream, not listening", "not a socket"
	Err  error
}

func (e *AdoptError) Error() string {
	s := "p2pd: socket"
	if e.FD >= 0 {
		s += " " + strconv.Itoa(e.FD)
	}
	if e.Name != "" {
		s += " (" + e.Name + ")"
	}
	if e.Kind != "" {
		s += ": " + e.Kind
	}
	return s + ": " + trimPrefix(e.Err)
}

func (e *AdoptError) Unwrap() error { return e.Err }
