package p2pd

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

const haveFanout = true

// bindFanout binds n sockets with SO_REUSEPORT to addr, which lc's Control
// (p2pd's options, then the user's) sets up as for one socket.
//
// It first binds addr once without SO_REUSEPORT and closes that socket
// again. That bind fails, as a listener of one socket would, when anything
// is bound there: another instance, a fan-out one included (the kernel
// lets a socket with SO_REUSEPORT join a group of the same user's, but not
// one without it), and it picks the port when addr's is 0 (a socket with
// SO_REUSEPORT could be given a port that a group of the same user holds).
// What it cannot see is a socket bound between its close and the group's
// binds, microseconds later; a TCP connection that reaches the first
// socket in that time is reset.
//
// A failed bind closes the sockets bound before it.
func bindFanout(ctx context.Context, lc net.ListenConfig, proto Proto, network, addr string, n int) (*fanout, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := probePort(ctx, lc, proto, network, addr)
	if err != nil {
		return nil, err
	}
	addr = net.JoinHostPort(host, strconv.Itoa(int(port)))
	ctl := lc.Control
	lc.Control = func(network, address string, rc syscall.RawConn) error {
		if err := setReusePort(rc); err != nil {
			return err
		}
		if ctl != nil {
			return ctl(network, address, rc)
		}
		return nil
	}
	f := &fanout{socks: make([]fanSock, n)}
	for i := range f.socks {
		s := &f.socks[i]
		s.idx = uint16(i)
		if proto == TCP {
			s.ln, err = lc.Listen(ctx, network, addr)
		} else {
			var pc net.PacketConn
			if pc, err = lc.ListenPacket(ctx, network, addr); err == nil {
				var ok bool
				if s.udp, ok = pc.(*net.UDPConn); !ok { // what ListenPacket makes for "udp4" and "udp6"
					pc.Close()
					err = fmt.Errorf("%w: %T", ErrSocketUnsupported, pc)
				}
			}
		}
		if err != nil {
			f.closeBound()
			return nil, err
		}
	}
	return f, nil
}

// probePort binds addr with lc, as a listener of one socket does, and
// closes it again; it returns the port bound.
func probePort(ctx context.Context, lc net.ListenConfig, proto Proto, network, addr string) (uint16, error) {
	if proto == TCP {
		l, err := lc.Listen(ctx, network, addr)
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return addrPortOf(l.Addr()).Port(), nil
	}
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	return addrPortOf(pc.LocalAddr()).Port(), nil
}

func setReusePort(rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt SO_REUSEPORT", serr)
	}
	return nil
}
