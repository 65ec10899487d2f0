package p2pd

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TCP_INQ (Linux 4.18): recvmsg says, in a control message, how many bytes
// the socket still holds after the read, and 1 once the peer's FIN has
// come (or the connection failed): 0 means that nothing is left to read
// until the socket becomes readable again. That lets a connection wait
// for more without first a read that ends in EAGAIN (see
// connReader.consumeInside). Accepted sockets do not inherit it from
// their listener: each connection asks.

// inqRead is a connection's recvmsg with room for the hint; the zero value
// is off.
type inqRead struct {
	on   bool
	msg  unix.Msghdr
	iov  unix.Iovec
	ctrl [32]byte // one cmsghdr and an int: 24 bytes
}

// enable asks the socket for the hint; it stays off if the system refuses.
func (r *inqRead) enable(rc syscall.RawConn) {
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_TCP, unix.TCP_INQ, 1) }); cerr == nil && err == nil {
		r.on = true
	}
}

// read reads once from the non-blocking socket into b (not empty): n, and
// inq, the hint, -1 if it did not come; again reports EAGAIN.
func (r *inqRead) read(fd uintptr, b []byte) (n, inq int, again bool, err error) {
	r.iov.Base = &b[0]
	r.iov.SetLen(len(b))
	defer func() { r.iov.Base = nil }() // hold no pointer to a pooled buffer
	r.msg.Iov = &r.iov
	r.msg.SetIovlen(1)
	for {
		r.msg.Control = &r.ctrl[0]
		r.msg.SetControllen(len(r.ctrl))
		r.msg.Flags = 0
		rn, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), 0)
		switch e {
		case 0:
			return int(rn), r.hint(), false, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, -1, true, nil
		}
		return 0, -1, false, os.NewSyscallError("recvmsg", e)
	}
}

// hint parses the control message of the last read.
func (r *inqRead) hint() int {
	hl := unix.CmsgLen(0)
	if int(r.msg.Controllen) < unix.CmsgLen(4) || r.msg.Flags&unix.MSG_CTRUNC != 0 {
		return -1
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&r.ctrl[0]))
	if h.Level != unix.SOL_TCP || h.Type != unix.TCP_CM_INQ || int(h.Len) < unix.CmsgLen(4) {
		return -1
	}
	return int(*(*int32)(unsafe.Pointer(&r.ctrl[hl])))
}
