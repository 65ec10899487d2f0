package p2pd

import (
	"net"
	"strings"
	"syscall"
)

// The socket options p2pd sets on the sockets it opens. The system calls
// are in sockopt_unix.go, sockopt_windows.go and sockopt_other.go.

func (c *PipeConfig) setLinger(conn net.Conn) {
	if secs, ok := c.lingerSecs(); ok {
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(secs)
		}
	}
}

// control returns the Control function setting p2pd's socket options
// before user's; nil when there is nothing to do.
func (c *PipeConfig) control(proto Proto, user func(network, address string, rc syscall.RawConn) error) func(network, address string, rc syscall.RawConn) error {
	reuse, bcast := proto == UDP && c.ReuseAddr, proto == UDP && c.Broadcast
	if !reuse && !bcast && !c.FreeBind {
		return user
	}
	return func(network, address string, rc syscall.RawConn) error {
		if reuse || bcast {
			if err := setSockopts(rc, reuse, bcast); err != nil {
				return err
			}
		}
		if c.FreeBind {
			if err := setFreeBind(rc, strings.HasSuffix(network, "6")); err != nil {
				return err
			}
		}
		if user != nil {
			return user(network, address, rc)
		}
		return nil
	}
}
