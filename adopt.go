package p2pd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Adopt serves already bound sockets as listeners of the daemon, with its
// settings and callback, as if ListenAll had opened them: Lookup,
// Listeners, Stats, SetOnMsg, Close and Shutdown see them. A listening TCP
// socket becomes a TCP server pipe, a UDP socket a UDP server pipe;
// pipes[i] serves files[i]. Each pipe's LocalAddr is the socket's own
// address (a wildcard socket is found by Lookup under 0.0.0.0 or ::). It is
// how sockets passed by a service manager are served (see package
// github.com/p2pd/p2pd/systemd), or sockets inherited over an exec.
//
// Adopt takes every File, and closes it before returning, on success and
// on error alike: the pipes hold duplicates of the descriptors. It is all
// or nothing: when a socket cannot be served (a Unix socket, a connected
// stream socket, anything not a TCP listener or a UDP socket), when two
// serve the same protocol, address and port, or when the daemon already
// listens there (ErrAddrInUse), nothing is adopted, and the error wraps an
// *AdoptError for each such socket (errors.As finds the first).
// MaxListeners applies (a *LimitError). Of the options, only MsgCB has an
// effect.
func (d *Daemon) Adopt(ctx context.Context, files []*os.File, opts ...ListenOption) ([]*Pipe, error) {
	const op = "adopt"
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	pol, err := d.begin(ctx, op, opts)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, wrapOp(op, fmt.Errorf("%w: no sockets", ErrInvalid))
	}
	if err := ctx.Err(); err != nil {
		return nil, wrapOp(op, err)
	}
	cfg, err := d.callConfig(pol)
	if err != nil {
		return nil, wrapOp(op, err)
	}

	// Turn every descriptor into a net listener: no goroutine runs yet, so
	// a failure only has sockets to close.
	as := make([]adopted, 0, len(files))
	var errs []error
	taken := make(map[listenKey]bool)
	for _, f := range files {
		a, err := fileSocket(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		as = append(as, a)
		if taken[a.key] || d.has(a.key) {
			errs = append(errs, &AdoptError{Name: f.Name(), FD: a.fd, Kind: a.key.proto.String(),
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
	keys := make([]listenKey, len(as))
	for i, a := range as {
		pipes[i], keys[i] = servePipe(cfg, a.ln, a.pc, Route{}), a.key
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		for _, p := range pipes {
			p.Close()
		}
		return nil, wrapOp(op, ErrDaemonClosed)
	}
	d.registerLocked(pipes, keys, pol)
	d.mu.Unlock()
	return pipes, nil
}

// adopted is a socket turned into a net listener, not yet served.
type adopted struct {
	ln  net.Listener
	pc  net.PacketConn
	key listenKey
	fd  int // the adopted File's descriptor, for errors
}

func (a adopted) close() {
	if a.ln != nil {
		a.ln.Close()
	}
	if a.pc != nil {
		a.pc.Close()
	}
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

// fileSocket checks what f is and makes a net listener of it. f is left
// open (the listener holds a duplicate).
func fileSocket(f *os.File) (adopted, error) {
	fail := func(fd int, kind string, err error) (adopted, error) {
		name := ""
		if f != nil {
			name = f.Name()
		}
		return adopted{}, &AdoptError{Name: name, FD: fd, Kind: kind, Err: err}
	}
	if f == nil {
		return fail(-1, "", fmt.Errorf("%w: nil File", ErrInvalid))
	}
	proto, fd, kind, err := socketProto(f)
	if err != nil {
		return fail(fd, kind, err)
	}
	a := adopted{fd: fd}
	if proto == TCP {
		ln, err := net.FileListener(f)
		if err != nil {
			return fail(fd, kind, err)
		}
		if _, ok := ln.(*net.TCPListener); !ok {
			ln.Close()
			return fail(fd, fmt.Sprintf("%T", ln), ErrSocketUnsupported)
		}
		a.ln = ln
	} else {
		pc, err := net.FilePacketConn(f)
		if err != nil {
			return fail(fd, kind, err)
		}
		if _, ok := pc.(*net.UDPConn); !ok {
			pc.Close()
			return fail(fd, fmt.Sprintf("%T", pc), ErrSocketUnsupported)
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
