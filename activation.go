package p2pd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
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

// Errors of socket activation. Test for them with errors.Is; the errors
// returned wrap them in an *ActivationEnvError (a bad environment) or an
// *ActivatedSocketError (a descriptor that cannot be served).
var (
	// ErrNoActivation: the process was not given any socket (LISTEN_FDS
	// unset or 0, or the environment is another process's). A program that
	// also runs outside systemd falls back to binding its own listeners
	// when errors.Is(err, ErrNoActivation).
	ErrNoActivation = errors.New("p2pd: no sockets passed by the service manager")

	// ErrActivationPID: LISTEN_PID names another process (the environment
	// was inherited from a parent that was activated). It wraps
	// ErrNoActivation, as sd_listen_fds treats it as "no sockets".
	ErrActivationPID = fmt.Errorf("%w: LISTEN_PID is not this process", ErrNoActivation)

	// ErrActivationEnv: LISTEN_PID, LISTEN_FDS or LISTEN_FDNAMES is
	// malformed, or a descriptor it announces is not open.
	ErrActivationEnv = errors.New("p2pd: bad socket activation environment")

	// ErrSocketUnsupported: a passed descriptor is not a socket a Daemon
	// can serve: a listening TCP socket (SOCK_STREAM, listening) or a UDP
	// socket (SOCK_DGRAM), IPv4 or IPv6. Unix sockets, connected stream
	// sockets (a socket unit with Accept=yes), FIFOs, netlink, sequential
	// packet and raw sockets are refused.
	ErrSocketUnsupported = errors.New("p2pd: unsupported activated socket")
)

// ActivationEnvError reports a socket activation variable that cannot be
// used. Err wraps ErrActivationEnv, ErrActivationPID or ErrNoActivation.
type ActivationEnvError struct {
	Var   string // "LISTEN_PID", "LISTEN_FDS" or "LISTEN_FDNAMES"
	Value string
	Err   error
}

func (e *ActivationEnvError) Error() string {
	return fmt.Sprintf("p2pd: socket activation: %s=%q: %s", e.Var, e.Value, trimPrefix(e.Err))
}

func (e *ActivationEnvError) Unwrap() error { return e.Err }

// ActivatedSocketError reports a passed descriptor that a Daemon cannot
// serve. Err wraps ErrSocketUnsupported, or is the system's error.
type ActivatedSocketError struct {
	Name string // its LISTEN_FDNAMES entry
	FD   int    // its descriptor number when it was passed
	Kind string // what it is, e.g. "unix stream", "connected tcp", "not a socket"
	Err  error
}

func (e *ActivatedSocketError) Error() string {
	s := fmt.Sprintf("p2pd: activated socket %d", e.FD)
	if e.Name != "" {
		s += " (" + e.Name + ")"
	}
	if e.Kind != "" {
		s += ": " + e.Kind
	}
	return s + ": " + trimPrefix(e.Err)
}

func (e *ActivatedSocketError) Unwrap() error { return e.Err }

// ActivatedSocket is one descriptor passed by the service manager.
type ActivatedSocket struct {
	// Name is the socket's entry in LISTEN_FDNAMES: the FileDescriptorName=
	// of its socket unit, by default the unit's name (e.g.
	// "p2pd-echo.socket"). "unknown" when the manager passed no names, as
	// sd_listen_fds_with_names(3) says.
	Name string
	// FD is the descriptor number it was passed as: 3, 4, ...
	FD int
	// File owns the descriptor. It is close-on-exec.
	File *os.File
}

// claim guards the passed descriptors: once wrapped in *os.File they belong
// to those files, and wrapping them again would close them twice.
var claim struct {
	sync.Mutex
	done bool
}

// ActivationFiles returns the sockets the service manager passed to this
// process, as sd_listen_fds_with_names(3) does: LISTEN_PID must be this
// process's PID, LISTEN_FDS says how many descriptors follow from 3 on, and
// LISTEN_FDNAMES (optional) names them, separated by colons. Every
// descriptor is made close-on-exec, so that child processes do not inherit
// it.
//
// unsetEnv removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the
// environment, whatever the outcome (sd_listen_fds' unset_environment), so
// that child processes do not see them.
//
// When nothing was passed the error wraps ErrNoActivation: LISTEN_FDS and
// LISTEN_PID unset, LISTEN_FDS=0, or LISTEN_PID another process's
// (ErrActivationPID). A malformed variable, a count of names that differs
// from LISTEN_FDS, or an announced descriptor that is not open is an
// *ActivationEnvError wrapping ErrActivationEnv; the descriptors are then
// left alone (except made close-on-exec), and no *os.File is made.
//
// The descriptors are claimed once per process: the caller owns the files,
// and later calls return ErrNoActivation. The sockets' types are not
// checked here; [Daemon.Adopt] checks them. On platforms without socket
// activation (Windows, Plan 9, WebAssembly) the error wraps both
// ErrNoActivation and ErrUnsupported.
func ActivationFiles(unsetEnv bool) ([]ActivatedSocket, error) {
	if unsetEnv {
		defer func() {
			for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				os.Unsetenv(v)
			}
		}()
	}
	if !activationSupported {
		return nil, fmt.Errorf("%w (%w)", ErrNoActivation, ErrUnsupported)
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
			return nil, &ActivationEnvError{Var: "LISTEN_FDS", Value: strconv.Itoa(n),
				Err: fmt.Errorf("%w: descriptor %d: %v", ErrActivationEnv, fd, err)}
		}
	}
	claim.done = true
	socks := make([]ActivatedSocket, n)
	for i := range socks {
		fd := listenFDsStart + i
		socks[i] = ActivatedSocket{Name: names[i], FD: fd, File: os.NewFile(uintptr(fd), names[i])}
	}
	return socks, nil
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
		return 0, nil, &ActivationEnvError{Var: "LISTEN_PID", Value: pidStr,
			Err: fmt.Errorf("%w: LISTEN_FDS is set but LISTEN_PID is not", ErrNoActivation)}
	}
	want, err := strconv.Atoi(pidStr)
	if err != nil || want <= 0 {
		return 0, nil, &ActivationEnvError{Var: "LISTEN_PID", Value: pidStr,
			Err: fmt.Errorf("%w: not a process ID", ErrActivationEnv)}
	}
	if want != pid {
		return 0, nil, &ActivationEnvError{Var: "LISTEN_PID", Value: pidStr,
			Err: fmt.Errorf("%w (this is %d)", ErrActivationPID, pid)}
	}
	if fdsStr == "" {
		return 0, nil, &ActivationEnvError{Var: "LISTEN_FDS", Value: fdsStr,
			Err: fmt.Errorf("%w: LISTEN_PID is set but LISTEN_FDS is not", ErrNoActivation)}
	}
	n, err := strconv.Atoi(fdsStr)
	switch {
	case err != nil || n < 0:
		return 0, nil, &ActivationEnvError{Var: "LISTEN_FDS", Value: fdsStr,
			Err: fmt.Errorf("%w: not a count of descriptors", ErrActivationEnv)}
	case n > maxListenFDs:
		return 0, nil, &ActivationEnvError{Var: "LISTEN_FDS", Value: fdsStr,
			Err: fmt.Errorf("%w: more than %d descriptors", ErrActivationEnv, maxListenFDs)}
	case n == 0:
		return 0, nil, &ActivationEnvError{Var: "LISTEN_FDS", Value: fdsStr, Err: ErrNoActivation}
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
		return 0, nil, &ActivationEnvError{Var: "LISTEN_FDNAMES", Value: namesStr,
			Err: fmt.Errorf("%w: %d names for %d descriptors", ErrActivationEnv, len(names), n)}
	}
	return n, names, nil
}

// ListenActivated serves every socket the service manager passed to the
// process: [ActivationFiles] (the variables unset) then [Daemon.Adopt]. When
// the process was not socket-activated the error wraps ErrNoActivation, and
// the caller may bind its own listeners instead:
//
//	ls, err := d.ListenActivated(ctx)
//	if errors.Is(err, p2pd.ErrNoActivation) {
//		ls, err = d.ListenAll(ctx, targets, ports, protos, p2pd.AnyFamily)
//	}
func (d *Daemon) ListenActivated(ctx context.Context) ([]*Pipe, error) {
	if d.isClosed() {
		return nil, wrapOp("listen activated", ErrDaemonClosed)
	}
	socks, err := ActivationFiles(true)
	if err != nil {
		return nil, err
	}
	return d.adopt(ctx, "listen activated", socks)
}

// Adopt serves already bound sockets as listeners of the daemon, with its
// settings and callback, as if ListenAll had opened them: Lookup,
// Listeners, Stats, AddMsgCB, Close and Shutdown see them. A listening TCP
// socket becomes a TCP server pipe, a UDP socket a UDP server pipe;
// pipes[i] serves socks[i]. Each pipe's LocalAddr is the socket's own
// address (a wildcard socket is found by Lookup under 0.0.0.0 or ::).
//
// Adopt takes every File, and closes it before returning: the pipes hold
// duplicates of the descriptors. It is all or nothing, whatever
// Daemon.BestEffort says: when a socket cannot be served, when two serve
// the same protocol, address and port, or when the daemon already listens
// there (ErrAddrInUse), nothing is adopted, and the error wraps an
// *ActivatedSocketError for each such socket (errors.As finds the first).
// MaxListeners applies (a *LimitError).
func (d *Daemon) Adopt(ctx context.Context, socks []ActivatedSocket) ([]*Pipe, error) {
	return d.adopt(ctx, "adopt", socks)
}

// adopted is a socket turned into a net listener, not yet served.
type adopted struct {
	ln  net.Listener
	pc  net.PacketConn
	key listenKey
}

func (a adopted) close() {
	if a.ln != nil {
		a.ln.Close()
	}
	if a.pc != nil {
		a.pc.Close()
	}
}

func (d *Daemon) adopt(ctx context.Context, op string, socks []ActivatedSocket) ([]*Pipe, error) {
	defer func() {
		for _, s := range socks {
			if s.File != nil {
				s.File.Close()
			}
		}
	}()
	if len(socks) == 0 {
		return nil, wrapOp(op, ErrNoActivation)
	}
	if err := ctx.Err(); err != nil {
		return nil, wrapOp(op, err)
	}
	d.mu.Lock()
	cfg, err := copyConfig(d.pipeConfig())
	d.mu.Unlock()
	if err != nil {
		return nil, wrapOp(op, err)
	}

	// Turn every descriptor into a net listener: no goroutine runs yet, so
	// a failure only has sockets to close.
	as := make([]adopted, 0, len(socks))
	var errs []error
	taken := make(map[listenKey]bool)
	for _, s := range socks {
		a, err := fileSocket(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		as = append(as, a)
		if taken[a.key] || d.has(a.key) {
			errs = append(errs, &ActivatedSocketError{Name: s.Name, FD: s.FD, Kind: a.key.proto.String(),
				Err: fmt.Errorf("%w: %v %v: the daemon already listens there", ErrAddrInUse, a.key.proto, addrOfKey(a.key))})
		}
		taken[a.key] = true
	}
	closeAll := func() {
		for _, a := range as {
			a.close()
		}
	}
	if len(errs) > 0 {
		closeAll()
		if len(errs) == 1 {
			return nil, wrapOp(op, errs[0])
		}
		return nil, wrapOp(op, adoptErrors(errs))
	}
	if err := d.reserve(op, len(as)); err != nil {
		closeAll()
		return nil, err
	}
	defer d.release(len(as))

	pipes := make([]*Pipe, len(as))
	for i, a := range as {
		pipes[i] = serveAdopted(a, cfg)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		for _, p := range pipes {
			p.Close()
		}
		return nil, wrapOp(op, ErrDaemonClosed)
	}
	keys := make([]listenKey, len(as))
	for i, a := range as {
		keys[i] = a.key
	}
	d.registerLocked(pipes, keys, policy{})
	d.mu.Unlock()
	return pipes, nil
}

// adoptErrors are the sockets that failed one Adopt: errors.Is and
// errors.As look into each.
type adoptErrors []error

func (e adoptErrors) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = trimPrefix(err)
	}
	return fmt.Sprintf("%d sockets: %s", len(e), strings.Join(parts, "; "))
}

func (e adoptErrors) Unwrap() []error { return e }

func addrOfKey(k listenKey) string {
	return net.JoinHostPort(k.ip.String(), strconv.Itoa(int(k.port)))
}

// fileSocket checks what s is and makes a net listener of it. s.File is
// left open (the listener holds a duplicate).
func fileSocket(s ActivatedSocket) (adopted, error) {
	fail := func(kind string, err error) (adopted, error) {
		return adopted{}, &ActivatedSocketError{Name: s.Name, FD: s.FD, Kind: kind, Err: err}
	}
	if s.File == nil {
		return fail("", fmt.Errorf("%w: nil File", ErrInvalid))
	}
	proto, kind, err := socketProto(s.File)
	if err != nil {
		return fail(kind, err)
	}
	var a adopted
	if proto == TCP {
		ln, err := net.FileListener(s.File)
		if err != nil {
			return fail(kind, err)
		}
		if _, ok := ln.(*net.TCPListener); !ok {
			ln.Close()
			return fail(fmt.Sprintf("%T", ln), ErrSocketUnsupported)
		}
		a.ln = ln
	} else {
		pc, err := net.FilePacketConn(s.File)
		if err != nil {
			return fail(kind, err)
		}
		if _, ok := pc.(*net.UDPConn); !ok {
			pc.Close()
			return fail(fmt.Sprintf("%T", pc), ErrSocketUnsupported)
		}
		a.pc = pc
	}
	local := a.localAddr()
	a.key = listenKey{f: FamilyOf(local.Addr()), proto: proto, port: local.Port(), ip: local.Addr()}
	return a, nil
}

func (a adopted) localAddr() netip.AddrPort {
	if a.ln != nil {
		return addrPortOf(a.ln.Addr())
	}
	return addrPortOf(a.pc.LocalAddr())
}

// serveAdopted is ServeListener or ServePacketConn with the daemon's shared
// config; a UDP socket also gets batched I/O, as the daemon's own do.
func serveAdopted(a adopted, cfg *PipeConfig) *Pipe {
	var p *Pipe
	if a.ln != nil {
		p = newPipe(cfg, TCP, true, nil)
		p.ln = a.ln
	} else {
		p = newPipe(cfg, UDP, true, nil)
		p.setPacketConn(a.pc)
	}
	p.local = p.localFromSocket()
	p.route = Route{Family: FamilyOf(p.local.Addr()), Bound: p.local}
	if p.udp != nil {
		if sa, err := resolveZone(p.local); err == nil {
			p.initBatchBound(p.route.Family, sa)
		}
	}
	p.start()
	return p
}
