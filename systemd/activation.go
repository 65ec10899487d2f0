package systemd

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"
)

// Socket activation: the service manager (systemd, or anything speaking its
// protocol: systemd-socket-activate, s6, launchers in containers) binds the
// sockets and passes them to the service as descriptors 3, 4, ... with
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES in the environment. See
// sd_listen_fds(3).

// listenFDsStart is SD_LISTEN_FDS_START: the first passed descriptor.
const listenFDsStart = 3

// maxListenFDs bounds LISTEN_FDS, so that a garbage value cannot make the
// process wrap millions of descriptors.
const maxListenFDs = 1 << 16

// claim guards the passed descriptors: once wrapped in *os.File they belong
// to those files, and wrapping them again would close them twice.
var claim struct {
	sync.Mutex
	done bool
}

// Files returns the sockets the service manager passed to this process, as
// sd_listen_fds_with_names(3) does: LISTEN_PID must be this
// process's PID, LISTEN_FDS says how many descriptors follow from 3 on, and
// LISTEN_FDNAMES (optional) names them, separated by colons. Every
// descriptor is made close-on-exec, so that child processes do not inherit
// it. files[i] is descriptor 3+i, and its Name is its LISTEN_FDNAMES entry:
// the FileDescriptorName= of its socket unit, by default the unit's name
// (e.g. "p2pd-echo.socket"), or "unknown" when the manager passed no names.
//
// unsetEnv removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the
// environment, whatever the outcome (sd_listen_fds' unset_environment), so
// that child processes do not see them.
//
// When nothing was passed the error wraps ErrNoActivation: LISTEN_FDS and
// LISTEN_PID unset, LISTEN_FDS=0, or LISTEN_PID another process's
// (ErrListenPID). A malformed variable, a count of names that differs from
// LISTEN_FDS, or an announced descriptor that is not open is an *EnvError
// wrapping ErrListenEnv; the descriptors are then left alone (except made
// close-on-exec), and no *os.File is made.
//
// The descriptors are claimed once per process (they are the process's, as
// the environment is): the caller owns the files, and later calls return
// ErrNoActivation. The sockets' types are not checked here;
// [p2pd.Daemon.Adopt] checks them. Where there is no socket activation
// (outside Unix) the error wraps both ErrNoActivation and
// p2pd.ErrUnsupported.
func Files(unsetEnv bool) ([]*os.File, error) {
	if unsetEnv {
		defer func() {
			for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				os.Unsetenv(v)
			}
		}()
	}
	if !activationSupported {
		return nil, fmt.Errorf("%w (%w)", ErrNoActivation, p2pd.ErrUnsupported)
	}
	claim.Lock()
	defer claim.Unlock()
	if claim.done {
		return nil, fmt.Errorf("%w: the passed sockets were already claimed", ErrNoActivation)
	}
	n, names, err := parseListenEnv(os.Getenv, os.Getpid())
	if err != nil {
		return nil, err
	}
	for i := range n {
		fd := listenFDsStart + i
		if err := setCloexec(fd); err != nil {
			return nil, &EnvError{Var: "LISTEN_FDS", Value: strconv.Itoa(n),
				Err: fmt.Errorf("%w: descriptor %d: %v", ErrListenEnv, fd, err)}
		}
	}
	claim.done = true
	files := make([]*os.File, n)
	for i := range files {
		files[i] = os.NewFile(uintptr(listenFDsStart+i), names[i])
	}
	return files, nil
}

// parseListenEnv reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES for the
// process pid: the number of passed descriptors and their names.
func parseListenEnv(getenv func(string) string, pid int) (int, []string, error) {
	pidStr, fdsStr, namesStr := getenv("LISTEN_PID"), getenv("LISTEN_FDS"), getenv("LISTEN_FDNAMES")
	if fdsStr == "" && pidStr == "" {
		return 0, nil, ErrNoActivation
	}
	if pidStr == "" {
		// sd_listen_fds requires LISTEN_PID: without it the descriptors
		// cannot be known to be this process's.
		return 0, nil, &EnvError{Var: "LISTEN_PID", Value: pidStr,
			Err: fmt.Errorf("%w: LISTEN_FDS is set but LISTEN_PID is not", ErrNoActivation)}
	}
	want, err := strconv.Atoi(pidStr)
	if err != nil || want <= 0 {
		return 0, nil, &EnvError{Var: "LISTEN_PID", Value: pidStr,
			Err: fmt.Errorf("%w: not a process ID", ErrListenEnv)}
	}
	if want != pid {
		return 0, nil, &EnvError{Var: "LISTEN_PID", Value: pidStr,
			Err: fmt.Errorf("%w (this is %d)", ErrListenPID, pid)}
	}
	if fdsStr == "" {
		return 0, nil, &EnvError{Var: "LISTEN_FDS", Value: fdsStr,
			Err: fmt.Errorf("%w: LISTEN_PID is set but LISTEN_FDS is not", ErrNoActivation)}
	}
	n, err := strconv.Atoi(fdsStr)
	switch {
	case err != nil || n < 0:
		return 0, nil, &EnvError{Var: "LISTEN_FDS", Value: fdsStr,
			Err: fmt.Errorf("%w: not a count of descriptors", ErrListenEnv)}
	case n > maxListenFDs:
		return 0, nil, &EnvError{Var: "LISTEN_FDS", Value: fdsStr,
			Err: fmt.Errorf("%w: more than %d descriptors", ErrListenEnv, maxListenFDs)}
	case n == 0:
		return 0, nil, &EnvError{Var: "LISTEN_FDS", Value: fdsStr, Err: ErrNoActivation}
	}
	names := make([]string, n)
	if namesStr == "" {
		for i := range names {
			names[i] = "unknown"
		}
		return n, names, nil
	}
	names = strings.Split(namesStr, ":")
	if len(names) != n {
		return 0, nil, &EnvError{Var: "LISTEN_FDNAMES", Value: namesStr,
			Err: fmt.Errorf("%w: %d names for %d descriptors", ErrListenEnv, len(names), n)}
	}
	return n, names, nil
}

// Listen serves every socket the service manager passed to the process on
// d: [Files] (the variables unset), then [p2pd.Daemon.Adopt] with opts.
// When the process was not socket-activated the error wraps
// ErrNoActivation, and the caller may bind its own listeners instead:
//
//	ls, err := systemd.Listen(ctx, d)
//	if errors.Is(err, systemd.ErrNoActivation) {
//		ls, err = d.ListenAll(ctx, targets, ports, protos, p2pd.AnyFamily)
//	}
//
// A socket d cannot serve is a *p2pd.AdoptError, and then every passed
// socket is closed (Adopt is all or nothing).
func Listen(ctx context.Context, d *p2pd.Daemon, opts ...p2pd.ListenOption) ([]*p2pd.Pipe, error) {
	if d == nil {
		return nil, errtext.Errorf("p2pd: systemd: listen: %w: nil Daemon", p2pd.ErrInvalid)
	}
	files, err := Files(true)
	if err != nil {
		return nil, err
	}
	return d.Adopt(ctx, files, opts...)
}
