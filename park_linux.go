package p2pd

import (
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parking: a pipe with nothing to read (canPark says which) gives up its
// goroutine (and its stack) and waits in its owner's parker: one epoll
// set, watched by one goroutine through the runtime's poller. A TCP
// listener or a UDP server socket parks when it opens and after parkAfter
// without traffic (a UDP socket also when it resumed and finds nothing);
// an accepted connection when it has sent nothing since it began or
// resumed, or after parkAfter of silence. When the pipe
// becomes readable, is closed, drained or evicted, or a connection stays
// silent for its IdleTimeout, whoever takes it out of the set starts a new
// goroutine for it (resume), which goes on where the old one stopped;
// taking it out under mu happens once, so a pipe never has two goroutines.
//
// The parker starts when a pipe first parks, and ends (its goroutine, its
// epoll set) when its owner's last server pipe has ended: a Daemon has one
// for all its listeners, a Listen or Serve* call one for its pipe. It does
// not end while they run, so that a descriptor freed by it never lets a
// listener accept past the process's limit.

// havePark says that pipes can park (Linux: epoll).
const havePark = true

// parkSweep is the least time between two looks of the parker for
// parked connections past their IdleTimeout: a look is made when the first
// is due, so a connection is closed at most that late, and a crowd of
// them costs a look per parkSweep at most.
const parkSweep = 100 * time.Millisecond

// expiry is when a parked connection's IdleTimeout runs out; zero for one
// without (or a server pipe).
func expiry(c *Pipe) time.Time {
	idle := c.cfg.idleTimeout(true)
	if c.server || idle <= 0 {
		return time.Time{}
	}
	return monoEpoch.Add(time.Duration(c.lastRead.Load()) + idle)
}

// canPark reports whether the pipe may wait in its owner's parker rather
// than on a goroutine: a TCP listener, an accepted plain (not TLS) TCP
// connection, or a UDP server socket read in batches; not a server of
// several sockets (PipeConfig.Sockets), which is for busy addresses.
func (p *Pipe) canPark() bool {
	if p.cfg.park == nil || p.fan != nil {
		return false // a pipe of several sockets keeps its goroutines
	}
	switch {
	case p.ub != nil:
		return p.server
	case p.rc != nil:
		return p.parent != nil || p.ln != nil
	}
	return false
}

// parkRC is the socket that the parker watches for p.
func (p *Pipe) parkRC() syscall.RawConn {
	if p.ub != nil {
		return p.ub.rc
	}
	return p.rc
}

type parker struct {
	mu     sync.Mutex
	f      *os.File      // the epoll set, nil when not running
	done   chan struct{} // closed when its goroutine has ended
	epfd   int           // its descriptor (f.Fd would make it blocking)
	nextID uint64
	parked map[uint64]*Pipe
	users  int       // the owner's server pipes not ended
	sweep  time.Time // the next look for expired connections; zero while none can expire
}

// hold counts a server pipe of the owner; release, when it has ended,
// ends the parker after the last.
func (k *parker) hold() {
	if k == nil {
		return
	}
	k.mu.Lock()
	k.users++
	k.mu.Unlock()
}

func (k *parker) release() {
	if k == nil {
		return
	}
	k.mu.Lock()
	k.users--
	done := k.stopIfIdleLocked()
	k.mu.Unlock()
	if done != nil {
		<-done // never called on the parker's goroutine, which only starts others
	}
}

// park puts c, a connection whose goroutine is about to return, in the
// set. It returns false, and the goroutine goes on reading, if c is closing
// or the system refused.
func (k *parker) park(c *Pipe) bool {
	k.mu.Lock()
	if c.closed.Load() || c.draining.Load() {
		k.mu.Unlock()
		return false
	}
	if k.f == nil && !k.startLocked() {
		k.mu.Unlock()
		return false
	}
	// A pipe parked before is still in the set (its one-shot entry
	// disabled): re-arm it; one parking for the first time is added (one
	// system call, not a MOD refused first). A set made anew since has not
	// seen it: ENOENT, then ADD.
	op := unix.EPOLL_CTL_MOD
	if c.parkID == 0 {
		k.nextID++
		c.parkID = k.nextID
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.parkID), Pad: int32(c.parkID >> 32)}
	var cerr error
	err := c.parkRC().Control(func(fd uintptr) {
		cerr = unix.EpollCtl(k.epfd, op, int(fd), &ev)
		if cerr == unix.ENOENT && op == unix.EPOLL_CTL_MOD {
			cerr = unix.EpollCtl(k.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err != nil || cerr != nil {
		k.stopIfIdleLocked()
		k.mu.Unlock()
		return false
	}
	// In the set before the caller's goroutine returns; under mu, so that
	// an event, or a wake, finds it there.
	k.parked[c.parkID] = c
	if e := expiry(c); !e.IsZero() && (k.sweep.IsZero() || e.Before(k.sweep)) {
		k.sweep = e
		k.f.SetReadDeadline(e)
	}
	k.mu.Unlock()
	return true
}

// startLocked makes the epoll set and starts the goroutine; k.mu is held.
func (k *parker) startLocked() bool {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return false
	}
	f := os.NewFile(uintptr(fd), "p2pd-park")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return false
	}
	k.f, k.epfd = f, fd
	if k.parked == nil {
		k.parked = make(map[uint64]*Pipe)
	}
	k.done = make(chan struct{})
	go k.run(f, rc, k.done)
	return true
}

// take removes c from the set; true if this call did, and must start c's
// goroutine (or, for park, go on with it).
func (k *parker) take(c *Pipe) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c.parkID == 0 || k.parked[c.parkID] != c {
		return false
	}
	delete(k.parked, c.parkID)
	return true
}

// stopIfIdleLocked ends the goroutine once nothing is parked and the
// owner's server pipes have ended: closing the set wakes it. k.mu is held.
func (k *parker) stopIfIdleLocked() (done <-chan struct{}) {
	if len(k.parked) == 0 && k.users <= 0 && k.f != nil {
		k.f.Close()
		k.f = nil
		return k.done
	}
	return nil
}

// wake resumes c if it is parked; the caller has just closed or drained
// it. It returns false if c was not parked.
func (k *parker) wake(c *Pipe) bool {
	if !k.take(c) {
		return false
	}
	go c.resume(false)
	return true
}

// run is the parker's goroutine: it resumes the connections that became
// readable, and those past their IdleTimeout (looking at most every
// parkSweep). It ends when f is closed.
func (k *parker) run(f *os.File, rc syscall.RawConn, done chan<- struct{}) {
	defer close(done)
	var evs [128]unix.EpollEvent
	var n int
	read := func(fd uintptr) bool {
		var err error
		n, err = unix.EpollWait(int(fd), evs[:], 0)
		if err == unix.EINTR {
			return false
		}
		return n != 0 || err != nil
	}
	var ready, expired []*Pipe
	for {
		n = 0
		rc.Read(read) // an error: the deadline (sweep), or f closed (stopped)
		k.mu.Lock()
		if k.f != f { // stopped
			k.mu.Unlock()
			return
		}
		ready, expired = ready[:0], expired[:0]
		for i := range n {
			id := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
			if c := k.parked[id]; c != nil {
				delete(k.parked, id)
				ready = append(ready, c)
			}
		}
		if now := time.Now(); !k.sweep.IsZero() && !now.Before(k.sweep) {
			var next time.Time // the next expiry
			for id, c := range k.parked {
				switch e := expiry(c); {
				case e.IsZero():
				case !now.Before(e):
					delete(k.parked, id)
					expired = append(expired, c)
				case next.IsZero() || e.Before(next):
					next = e
				}
			}
			if !next.IsZero() && next.Sub(now) < parkSweep {
				next = now.Add(parkSweep)
			}
			k.sweep = next
			f.SetReadDeadline(next)
		}
		k.mu.Unlock()
		for _, c := range ready {
			go c.resume(false)
		}
		for _, c := range expired {
			go c.resume(true)
		}
		clear(ready)
		clear(expired)
	}
}
