//go:build !linux

package p2pd

import "syscall"

// inqRead is the TCP_INQ read of Linux (tcp_inq_linux.go); elsewhere it
// stays off, and connections read on to EAGAIN.
type inqRead struct{ on bool }

func (r *inqRead) enable(syscall.RawConn) {}

func (r *inqRead) read(fd uintptr, b []byte) (n, inq int, again bool, err error) {
	n, again, err = readRaw(fd, b)
	return n, -1, again, err
}
