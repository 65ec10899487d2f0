package main

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawTimeout is the socket's SO_RCVTIMEO: how often an idle raw server
// looks at its stop flag.
const rawTimeout = 100 * 1000 // µs

// startRaw is the ceiling of the UDP benches: the least a Go server does
// per datagram without the runtime poller. A blocking socket (no
// SOCK_NONBLOCK), read and answered by one goroutine locked to its thread:
// recvmmsg with MSG_WAITFORONE (block for the first datagram, take at most
// batchLen, each in a batchBuf buffer as the batch server does), then
// sendmmsg of the same headers, the source addresses kept, back to their
// senders. No netpoll, no net.Conn, no address conversion.
//
// It stops by itself: SO_RCVTIMEO wakes an idle recvmmsg every 100 ms
// (EAGAIN), and the loop checks a stop flag then and after every batch.
func startRaw(ctx context.Context, proto string, addr netip.AddrPort) (func() error, error) {
	if proto != "udp" {
		return nil, fmt.Errorf("the raw server is UDP only")
	}
	fd, err := rawSocket(addr)
	if err != nil {
		return nil, err
	}
	var (
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	wg.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		serveRaw(fd, &stop)
	})
	return func() error {
		<-ctx.Done()
		stop.Store(true)
		wg.Wait()
		return unix.Close(fd)
	}, nil
}

// rawSocket opens a blocking UDP socket bound to addr, with SO_RCVTIMEO.
func rawSocket(addr netip.AddrPort) (int, error) {
	var (
		fam = unix.AF_INET
		sa  unix.Sockaddr
	)
	if addr.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	} else {
		fam = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	tv := unix.NsecToTimeval(rawTimeout * 1000)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	return fd, nil
}

func serveRaw(fd int, stop *atomic.Bool) {
	var (
		hs    = make([]unix.Mmsghdr, batchLen)
		iovs  = make([]unix.Iovec, batchLen)
		names = make([]unix.RawSockaddrInet6, batchLen) // holds either family
		bufs  = make([]byte, batchLen*batchBuf)
	)
	// hs points at iovs and names, iovs at bufs (typed pointers: the
	// collector keeps them), and hs lives as long as the loop.
	for i := range hs {
		iovs[i].Base = &bufs[i*batchBuf]
		hs[i].Hdr.Iov = &iovs[i]
		hs[i].Hdr.Iovlen = 1
		hs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
	}
	for !stop.Load() {
		// recvmmsg writes back each message's name length and size; reset
		// them to the buffers' before every call.
		for i := range hs {
			hs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			iovs[i].SetLen(batchBuf)
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hs[0])), batchLen, unix.MSG_WAITFORONE, 0, 0)
		if errno != 0 {
			// EAGAIN: SO_RCVTIMEO expired (look at stop); EINTR: a signal
			// (the runtime's preemption, SIGURG) interrupted it; anything
			// else (e.g. ECONNREFUSED left by an ICMP error): go on.
			continue
		}
		for i := range int(n) {
			work()
			iovs[i].SetLen(int(hs[i].Len)) // the reply is the datagram
		}
		// sendmmsg may send fewer than asked; loop on the rest. A message
		// it refuses outright is dropped, as a failed sendto would be, so
		// the loop always advances; EINTR retries.
		for off := 0; off < int(n); {
			k, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hs[off])), n-uintptr(off), 0, 0, 0)
			switch {
			case errno == unix.EINTR:
				continue
			case errno != 0 || k == 0:
				k = 1
			}
			off += int(k)
		}
	}
}
