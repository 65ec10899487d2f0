package p2pd

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// udpLoop is the goroutine of a UDP pipe; a server socket's may park
// (udpBatchLoop) and be resumed.
func (p *Pipe) udpLoop() {
	if !p.server {
		p.up()
	}
	var reason error
	if p.ub != nil {
		reason = p.udpBatchLoop(p.ub)
	} else {
		reason = p.udpReadLoop(p.udp, 0)
	}
	if reason == errParked {
		return // the parker, or whoever takes it out, owns it now
	}
	p.waitFan(reason)
	p.terminate(reason)
	p.finish()
}

// udpReadLoop reads one datagram per call from c, the pipe's socket number
// sock (else from p.pc), into a buffer it keeps: the portable path, also
// taken by adopted sockets that are not *net.UDPConn.
func (p *Pipe) udpReadLoop(c *net.UDPConn, sock uint16) error {
	buf := make([]byte, p.cfg.bufferSize(UDP))
	var delay time.Duration
	for {
		var n int
		var from netip.AddrPort
		var err error
		if c != nil {
			n, from, err = c.ReadFromUDPAddrPort(buf)
		} else {
			var a net.Addr
			n, a, err = p.pc.ReadFrom(buf)
			from = addrPortOf(a)
		}
		if err == nil {
			delay = 0
			p.dispatch(buf[:n], Peer{AddrPort: unmap(from), Local: p.local, sock: sock})
			continue
		}
		if end, reason := p.udpReadError(err, &delay); end {
			return reason
		}
	}
}

// udpReadError decides what a UDP read error means: end the pipe (with
// reason, nil for a local close), or read again, after a backoff for
// errors worth retrying.
func (p *Pipe) udpReadError(err error, delay *time.Duration) (end bool, reason error) {
	switch {
	case p.closed.Load() || p.draining.Load():
		return true, nil
	case errors.Is(err, syscall.ECONNREFUSED) && p.server:
		return false, nil // an ICMP error a sent reply earned: the listener goes on
	case errors.Is(err, syscall.ECONNREFUSED):
		// A client pipe's peer answered a datagram with ICMP port
		// unreachable: nothing listens there, as a connected net.UDPConn
		// reports it.
		return true, errorf("p2pd: UDP peer %v: %w", p.remote, syscall.ECONNREFUSED)
	case isTemporary(err):
		*delay = backoff(*delay)
		if ok, held := p.cfg.warns.allow("udp read"); ok {
			p.cfg.logger().Warn("p2pd: UDP read error, retrying", "addr", p.local, "err", err, "delay", *delay, "since_last_warning", held)
		}
		return !p.sleep(*delay), nil
	}
	return true, err
}

// sendTo sends one datagram from a UDP server pipe. While the pipe's
// goroutine dispatches a batch of datagrams it may queue it instead, to
// send the batch's replies together (see PipeConfig.UDPBatch).
func (p *Pipe) sendTo(msg []byte, peer Peer) error {
	to := peer.AddrPort
	if p.local.Addr().Is4() && !unmap(to).Addr().Is4() {
		// (An IPv6 socket may be dual-stack, adopted from systemd say:
		// there the system decides.)
		return errorf("p2pd: send to %v: %w: an IPv4 pipe", to, ErrFamilyUnsupported)
	}
	if z := to.Addr().Zone(); z != "" && z != p.local.Addr().Zone() {
		// The net package would send an unknown zone as scope 0, letting
		// the routing table pick an interface, and it looks names up in
		// a process-wide cache, whatever namespace the socket is in:
		// make the zone a number here instead.
		var err error
		if to, err = p.numericZone(to); err != nil {
			return errorf("p2pd: send to %v: %w", to, err)
		}
	}
	if p.udp == nil {
		_, err := p.pc.WriteTo(msg, net.UDPAddrFromAddrPort(to))
		return err
	}
	c, u := p.socketOf(peer)
	if u != nil {
		if u.queue(p, msg, to, peer) {
			return nil
		}
		if handled, err := u.direct(p, msg, to, peer); handled {
			return err
		}
	}
	_, err := c.WriteToUDPAddrPort(msg, to)
	return err
}
