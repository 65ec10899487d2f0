package systemd

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/p2pd/p2pd"
)

// States for [Notify] (see sd_notify(3)). Several can be sent at once,
// separated by newlines: Notify(NotifyReady + "\nSTATUS=serving 4 listeners").
const (
	// NotifyReady tells the service manager that start-up is finished: a
	// unit with Type=notify is "active" from then on, and units ordered
	// after it start.
	NotifyReady = "READY=1"
	// NotifyStopping tells it that the service is shutting down.
	NotifyStopping = "STOPPING=1"
	// NotifyReloading tells it that the service reloads its configuration;
	// send NotifyReady when done.
	NotifyReloading = "RELOADING=1"
	// NotifyWatchdog is the keep-alive ping of WatchdogSec= (see
	// [WatchdogInterval]).
	NotifyWatchdog = "WATCHDOG=1"
)

// Notify sends state to the service manager, as sd_notify(3) does: one
// datagram on the Unix socket named by $NOTIFY_SOCKET, a path or, on Linux,
// an abstract name starting with "@". state is one or more newline-separated
// assignments: NotifyReady, NotifyStopping, "STATUS=free text",
// NotifyWatchdog.
//
// When NOTIFY_SOCKET is unset (the process does not run under systemd, or
// its unit is not Type=notify and has no NotifyAccess=), Notify does
// nothing and returns false, nil. Otherwise it returns true once the
// datagram is sent, or an error: a *NotifyError wrapping ErrNotifySocket
// for an address it cannot use (a relative path, a vsock: address, an
// abstract one outside Linux), or the system's error.
//
// systemd only accepts the messages of the processes its unit allows
// (NotifyAccess=main by default: the main process), and its PID must still
// be alive when systemd reads the datagram, so send NotifyStopping before
// the final cleanup rather than as the very last thing.
func Notify(state string) (sent bool, err error) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return false, nil
	}
	if state == "" {
		return false, &NotifyError{Socket: sock, Err: fmt.Errorf("%w: empty state", p2pd.ErrInvalid)}
	}
	switch {
	case strings.HasPrefix(sock, "@"):
		if runtime.GOOS != "linux" && runtime.GOOS != "android" {
			return false, &NotifyError{Socket: sock, Err: fmt.Errorf("%w: abstract socket names exist only on Linux", ErrNotifySocket)}
		}
		// Go's net package maps a leading '@' to the abstract namespace.
	case strings.HasPrefix(sock, "/"):
	default:
		return false, &NotifyError{Socket: sock, Err: fmt.Errorf("%w: not an absolute path or an @abstract name", ErrNotifySocket)}
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return false, &NotifyError{Socket: sock, Err: err}
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Write([]byte(state))
	if err != nil {
		return false, &NotifyError{Socket: sock, Err: err}
	}
	if n != len(state) {
		return false, &NotifyError{Socket: sock, Err: fmt.Errorf("short write: %d of %d bytes", n, len(state))}
	}
	return true, nil
}

// WatchdogInterval returns the interval of the service manager's watchdog
// for this process (WatchdogSec= of the unit: $WATCHDOG_USEC, for
// $WATCHDOG_PID if set), or 0 when there is none, as sd_watchdog_enabled(3)
// does. Send NotifyWatchdog more often than that, e.g. every half of it;
// a service that stops pinging is killed and, with Restart=, restarted.
// A malformed variable is an *EnvError wrapping ErrListenEnv.
func WatchdogInterval() (time.Duration, error) {
	return watchdogInterval(os.Getenv, os.Getpid())
}

func watchdogInterval(getenv func(string) string, pid int) (time.Duration, error) {
	usec := getenv("WATCHDOG_USEC")
	if usec == "" {
		return 0, nil
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		want, err := strconv.Atoi(p)
		if err != nil || want <= 0 {
			return 0, &EnvError{Var: "WATCHDOG_PID", Value: p, Err: fmt.Errorf("%w: not a process ID", ErrListenEnv)}
		}
		if want != pid {
			return 0, nil
		}
	}
	us, err := strconv.ParseUint(usec, 10, 64)
	if err != nil || us == 0 || us > uint64(1<<63-1)/1000 {
		return 0, &EnvError{Var: "WATCHDOG_USEC", Value: usec, Err: fmt.Errorf("%w: not a positive number of microseconds", ErrListenEnv)}
	}
	return time.Duration(us) * time.Microsecond, nil
}
