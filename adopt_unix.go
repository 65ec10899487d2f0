//go:build unix

package p2pd

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// socketProto says whether f is a listening TCP socket or a UDP socket, of
// IPv4 or IPv6; anything else is an error wrapping ErrSocketUnsupported.
// fd is f's descriptor number and kind describes what f is, for errors.
func socketProto(f *os.File) (proto Proto, fd int, kind string, err error) {
	fd = -1
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, fd, "", err
	}
	var typ, acc int
	var sa unix.Sockaddr
	var serr error
	cerr := rc.Control(func(u uintptr) {
		fd = int(u)
		if typ, serr = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); serr != nil {
			return
		}
		if sa, serr = unix.Getsockname(fd); serr != nil {
			return
		}
		if typ == unix.SOCK_STREAM {
			acc, serr = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		}
	})
	if cerr != nil {
		return 0, fd, "", cerr
	}
	if errors.Is(serr, unix.ENOTSOCK) {
		return 0, fd, "not a socket", ErrSocketUnsupported
	}
	if serr != nil {
		return 0, fd, "", serr
	}
	var family string
	switch sa.(type) {
	case *unix.SockaddrInet4:
		family = "ipv4"
	case *unix.SockaddrInet6:
		family = "ipv6"
	case *unix.SockaddrUnix:
		family = "unix"
	default:
		family = fmt.Sprintf("%T", sa)
	}
	var typeName string
	switch typ {
	case unix.SOCK_STREAM:
		typeName = "stream"
	case unix.SOCK_DGRAM:
		typeName = "datagram"
	case unix.SOCK_SEQPACKET:
		typeName = "seqpacket"
	case unix.SOCK_RAW:
		typeName = "raw"
	default:
		typeName = fmt.Sprintf("type %d", typ)
	}
	kind = family + " " + typeName
	if family != "ipv4" && family != "ipv6" {
		return 0, fd, kind, ErrSocketUnsupported
	}
	switch {
	case typ == unix.SOCK_STREAM && acc != 0:
		return TCP, fd, kind, nil
	case typ == unix.SOCK_STREAM:
		return 0, fd, kind + ", not listening (a connection: is the socket unit Accept=yes?)", ErrSocketUnsupported
	case typ == unix.SOCK_DGRAM:
		return UDP, fd, kind, nil
	}
	return 0, fd, kind, ErrSocketUnsupported
}
