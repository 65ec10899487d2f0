package systemd

import (
	"errors"
	"fmt"

	"github.com/p2pd/p2pd/internal/errtext"
)

// Errors of socket activation and notification. Test for them with
// errors.Is; the errors returned wrap them in an *EnvError (a bad
// environment) or a *NotifyError. A socket that a Daemon cannot serve is a
// *p2pd.AdoptError wrapping p2pd.ErrSocketUnsupported.
var (
	// ErrNoActivation: the process was not given any socket (LISTEN_FDS
	// unset or 0, or the environment is another process's). A program that
	// also runs outside systemd falls back to binding its own listeners
	// when errors.Is(err, ErrNoActivation).
	ErrNoActivation = errors.New("p2pd: systemd: no sockets passed by the service manager")

	// ErrListenPID: LISTEN_PID names another process (the environment was
	// inherited from a parent that was activated). It wraps
	// ErrNoActivation, as sd_listen_fds treats it as "no sockets".
	ErrListenPID = fmt.Errorf("%w: LISTEN_PID is not this process", ErrNoActivation)

	// ErrListenEnv: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, WATCHDOG_USEC
	// or WATCHDOG_PID is malformed, or a descriptor LISTEN_FDS announces is
	// not open.
	ErrListenEnv = errors.New("p2pd: systemd: bad environment")

	// ErrNotifySocket: NOTIFY_SOCKET is an address Notify cannot use.
	ErrNotifySocket = errors.New("p2pd: systemd: bad NOTIFY_SOCKET")
)

// EnvError reports a variable of the service manager that cannot be used.
// Err wraps ErrListenEnv, ErrListenPID or ErrNoActivation.
type EnvError struct {
	Var   string // e.g. "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC"
	Value string
	Err   error
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("p2pd: systemd: %s=%q: %s", e.Var, e.Value, errtext.Trim(e.Err))
}

func (e *EnvError) Unwrap() error { return e.Err }

// NotifyError reports a failed Notify.
type NotifyError struct {
	Socket string // NOTIFY_SOCKET
	Err    error
}

func (e *NotifyError) Error() string {
	return fmt.Sprintf("p2pd: systemd: notify %q: %s", e.Socket, errtext.Trim(e.Err))
}

func (e *NotifyError) Unwrap() error { return e.Err }
