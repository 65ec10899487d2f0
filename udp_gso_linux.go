package p2pd

import "github.com/p2pd/p2pd/internal/mmsg"

// UDP segmentation offload of a pipe's queued replies (see
// internal/mmsg/gso_linux.go): replies of one batch to one peer, of equal
// size, leave as one sendmmsg entry that the kernel cuts into the original
// datagrams. Asked of the socket once, at its first batch; the kernel's first refusal narrows
// or ends it for the socket, and the refused replies go one by one.

// initGSO gives u a GSO state if its socket takes UDP_SEGMENT.
func (u *udpBatch) initGSO() {
	u.rc.Control(func(fd uintptr) { u.gso = mmsg.NewGSO(fd) })
}

// useGSO lets u's send queue coalesce, once it holds the socket's queue;
// the first asks the socket (u.mu is held), so that opening a listener
// costs no system call for it.
func (u *udpBatch) useGSO() {
	if !u.gsoAsked {
		u.gsoAsked = true
		u.initGSO()
	}
	if u.gso != nil && u.gso.Max() > 0 {
		u.q.SetGSO(u.gso)
	}
}
