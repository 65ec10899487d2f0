package p2pd

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
)

// Fan-out: a server pipe bound to one address with several sockets
// (PipeConfig.Sockets), each read by a goroutine of its own, so that UDP
// reads and TCP accepts use several cores. The pipe stays one: one entry in
// a Daemon, one set of counters, limits and connections, one Close. The
// binding is in fanout_linux.go (SO_REUSEPORT); elsewhere it is refused
// (fanout_other.go).
//
// The kernel picks a socket for each datagram or connection by a hash of
// its source and destination address and port, so every datagram of a
// peer reaches the same socket while the group of sockets stays the same,
// and that socket's reader hands them on in order. The group is bound at
// once and closed at once, so it stays the same for the pipe's life. The
// kernel's hash is kept: it is keyed by a secret of the boot, so a flood
// from chosen ports spreads like any traffic. A classic BPF program
// (SO_ATTACH_REUSEPORT_CBPF) could pin the choice to the pipe's sockets,
// leaving nothing to a socket that joins later, but it runs with the
// payload at offset 0 (the ports only through the IP header, IPv6
// extension headers included), a socket that joins can replace it with
// its own, and while the group is stable it adds nothing.
//
// A message's Peer carries the index of the socket it came in on (see
// Peer.sock), so that Send answers from that socket and a reply made in
// the callback joins that reader's batch, without any goroutine identity.

// maxSockets bounds PipeConfig.Sockets: each socket is a descriptor, a
// goroutine and, while it has data, a receive batch.
const maxSockets = 64

func (c *PipeConfig) checkSockets() error {
	if c.Sockets > maxSockets {
		return errorf("p2pd: %w: Sockets %d (at most %d)", ErrInvalid, c.Sockets, maxSockets)
	}
	return nil
}

// sockets is how many sockets a server pipe binds.
func (c *PipeConfig) sockets() int {
	switch {
	case c.Sockets < 0 && haveFanout:
		return min(runtime.GOMAXPROCS(0), maxSockets)
	case c.Sockets <= 1:
		return 1
	}
	return c.Sockets
}

// fanout holds the sockets of a server pipe bound with Sockets > 1.
// socks[0] is the pipe's own (p.ln, or p.udp and p.ub), read by the pipe's
// goroutine; each other one has a goroutine of its own, counted in wg,
// which the pipe's goroutine waits for before the pipe ends.
type fanout struct {
	socks []fanSock
	wg    sync.WaitGroup
}

// fanSock is one socket of a fan-out.
type fanSock struct {
	ln      net.Listener // TCP
	udp     *net.UDPConn // UDP
	ub      *udpBatch    // UDP: its batched I/O, or nil
	idx     uint16       // its index in socks, as Peer.sock says it
	accepts atomic.Uint64
}

func (s *fanSock) packetConn() net.PacketConn {
	if s.udp == nil {
		return nil
	}
	return s.udp
}

// first is the entry of the pipe's own socket; nil without fan-out.
func (f *fanout) first() *fanSock {
	if f == nil {
		return nil
	}
	return &f.socks[0]
}

// startFan starts the goroutines of the pipe's other sockets, before the
// pipe's own starts. Everything they share is set before the first runs:
// a callback of one may close the pipe at once.
func (p *Pipe) startFan() {
	f := p.fan
	if f == nil {
		return
	}
	f.socks[0].ub = p.ub
	for i := 1; i < len(f.socks); i++ {
		if s := &f.socks[i]; s.udp != nil {
			s.ub = p.newBatch(s.udp, s.idx)
		}
	}
	f.wg.Add(len(f.socks) - 1)
	for i := 1; i < len(f.socks); i++ {
		if s := &f.socks[i]; s.ln != nil {
			go p.acceptSock(s)
		} else {
			go p.readSock(s)
		}
	}
}

// acceptSock is the goroutine of one of a TCP server's other sockets. An
// error that ends it ends the server, as one of its own socket would.
func (p *Pipe) acceptSock(s *fanSock) {
	defer p.fan.wg.Done()
	if reason := p.acceptFrom(s.ln, s); reason != nil {
		p.terminate(reason)
		for _, c := range p.Clients() {
			c.terminate(nil)
		}
	}
}

// readSock is the goroutine of one of a UDP server's other sockets.
func (p *Pipe) readSock(s *fanSock) {
	defer p.fan.wg.Done()
	var reason error
	if s.ub != nil {
		reason = p.udpBatchLoop(s.ub)
	} else {
		reason = p.udpReadLoop(s.udp, s.idx)
	}
	if reason != nil {
		p.terminate(reason)
	}
	// Else the pipe is closed or drained, and its goroutine waits for
	// this one to finish its callbacks before it closes the sockets.
}

// waitFan waits, in the pipe's goroutine, for those of its other sockets;
// a reason to end (not nil) closes the pipe first, so that they end.
func (p *Pipe) waitFan(reason error) {
	if f := p.fan; f != nil {
		if reason != nil {
			p.terminate(reason)
		}
		f.wg.Wait()
	}
}

// socketOf is the socket to answer peer from: the one its message came in
// on, else the pipe's first.
func (p *Pipe) socketOf(peer Peer) (*net.UDPConn, *udpBatch) {
	if f := p.fan; f != nil && int(peer.sock) < len(f.socks) {
		s := &f.socks[peer.sock]
		return s.udp, s.ub
	}
	return p.udp, p.ub
}

// drain stops the other sockets reading (see Pipe.drain).
func (f *fanout) drain() {
	if f == nil {
		return
	}
	for i := 1; i < len(f.socks); i++ {
		if s := &f.socks[i]; s.ln != nil {
			s.ln.Close()
		} else {
			s.udp.SetReadDeadline(aLongTimeAgo)
		}
	}
}

// close closes the other sockets (see Pipe.terminate).
func (f *fanout) close() {
	if f == nil {
		return
	}
	for i := 1; i < len(f.socks); i++ {
		s := &f.socks[i]
		if s.ub != nil {
			s.ub.close()
		}
		if s.ln != nil {
			s.ln.Close()
		} else {
			s.udp.Close()
		}
	}
}

// closeBound closes the sockets of a fan-out that a failed bind made.
func (f *fanout) closeBound() {
	for i := range f.socks {
		if s := &f.socks[i]; s.ln != nil {
			s.ln.Close()
		} else if s.udp != nil {
			s.udp.Close()
		}
	}
}

// addStats adds the other sockets' counters to s.
func (f *fanout) addStats(s *PipeStats) {
	if f == nil {
		return
	}
	for i := 1; i < len(f.socks); i++ {
		if k := &f.socks[i]; k.udp != nil {
			if k.ub != nil {
				s.SendDropped += k.ub.sendDropped()
			}
			s.RecvDropped += recvDropped(k.udp)
		}
	}
}
