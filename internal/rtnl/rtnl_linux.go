package rtnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// seq numbers dump requests; distinct values let a reply be matched to its
// request.
var seq atomic.Uint32

// maxDumpTries bounds the retries of a dump the kernel marks inconsistent
// (NLM_F_DUMP_INTR: the table changed while it was being dumped).
const maxDumpTries = 5

func dumpAddrs(family uint8) ([]Addr, error) {
	return dumpOf(rtmGetAddr, ifaddrmsgLen, family, rtmNewAddr, parseAddr)
}

func dumpRoutes(family uint8) ([]Route, error) {
	return dumpOf(rtmGetRoute, rtmsgLen, family, rtmNewRoute, parseRoute)
}

// dumpOf dumps with a request of type req, whose body is the hdrLen bytes
// of an ifaddrmsg or rtmsg asking for family, and parses the replies of
// type want with parse.
func dumpOf[T any](req uint16, hdrLen int, family uint8, want uint16, parse func([]byte) (T, bool, error)) ([]T, error) {
	if err := checkFamily(family); err != nil {
		return nil, err
	}
	body := make([]byte, hdrLen)
	body[0] = family
	var out []T
	if err := dump(req, body, func() { out = out[:0] }, collect(want, parse, &out)); err != nil {
		return nil, err
	}
	return out, nil
}

// checkFamily rejects a dump family the parsers would skip.
func checkFamily(family uint8) error {
	switch family {
	case 0, FamilyIPv4, FamilyIPv6:
		return nil
	}
	return fmt.Errorf("rtnl: unsupported family %d", family)
}

// dump runs a dump request of type typ with body req, calling fn with each
// reply message until NLMSG_DONE. If the kernel marks the dump
// inconsistent, it calls reset and starts again, a few times.
func dump(typ uint16, req []byte, reset func(), fn func(typ uint16, payload []byte) error) error {
	for range maxDumpTries {
		reset()
		err := dumpOnce(typ, req, fn)
		if !errors.Is(err, errDumpIntr) {
			return err
		}
	}
	return fmt.Errorf("%w (%d tries)", errDumpIntr, maxDumpTries)
}

func dumpOnce(typ uint16, req []byte, fn func(typ uint16, payload []byte) error) (err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("rtnl: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("rtnl: netlink bind: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("rtnl: netlink getsockname: %w", err)
	}
	nsa, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return fmt.Errorf("rtnl: netlink getsockname: unexpected address %T", sa)
	}
	pid := nsa.Pid
	s := seq.Add(1)

	msg := make([]byte, nlmsgHdrLen+len(req))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], typ)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:12], s)
	binary.NativeEndian.PutUint32(msg[12:16], pid)
	copy(msg[nlmsgHdrLen:], req)
	for {
		err = unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("rtnl: netlink send: %w", err)
	}

	buf := make([]byte, 32<<10)
	intr := false
	for {
		n, err := recv(fd, &buf)
		if err != nil {
			return err
		}
		done, err := parseMsgs(buf[:n], func(t, flags uint16, mseq, mpid uint32, p []byte) error {
			if mseq != s || mpid != pid {
				return nil // not a reply to this request
			}
			if flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			return fn(t, p)
		})
		if err != nil {
			return err
		}
		if done {
			if intr {
				return errDumpIntr
			}
			return nil
		}
	}
}

// recv reads one datagram from the kernel into *buf, growing it first when
// the datagram would not fit, and returns its length.
func recv(fd int, buf *[]byte) (int, error) {
	for {
		// Peek with MSG_TRUNC for the real length: a plain read would drop
		// the rest of a datagram longer than the buffer.
		n, _, err := unix.Recvfrom(fd, *buf, unix.MSG_PEEK|unix.MSG_TRUNC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("rtnl: netlink receive: %w", err)
		}
		if n > len(*buf) {
			*buf = make([]byte, align4(n))
			continue
		}
		n, from, err := unix.Recvfrom(fd, *buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("rtnl: netlink receive: %w", err)
		}
		if f, ok := from.(*unix.SockaddrNetlink); !ok || f.Pid != 0 {
			continue // not from the kernel
		}
		return n, nil
	}
}
