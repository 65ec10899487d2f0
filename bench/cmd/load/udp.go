package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share: recvmmsg and
// sendmmsg on Linux. The client batches so that it spends as little of the
// shared CPUs as it can; it is the same client for every server.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// udpStats is what one socket counted.
type udpStats struct {
	replies uint64 // verified replies to datagrams still in flight
	lost    uint64 // datagrams unanswered after the timeout
	late    uint64 // verified replies that came after their datagram was declared lost
	ioErrs  uint64
}

// ioErr counts an I/O error and reports a socket's first on stderr, so a
// failed run says why.
func (st *udpStats) ioErr(id uint32, op string, err error) {
	if st.ioErrs == 0 {
		fmt.Fprintf(os.Stderr, "load: socket %d: first %s error: %v\n", id, op, err)
	}
	st.ioErrs++
}

// runUDP runs UDP echo: cfg.conns connected sockets, each keeping
// cfg.window datagrams in flight.
func runUDP(cfg *config) (map[string]float64, error) { return runUDPWith(cfg, "udp", udpSocket) }

// runUDPWith runs cfg.conns connected sockets, each driven by perSocket
// until the run's end, and sums what they counted; mode names the run in
// messages.
func runUDPWith(cfg *config, mode string, perSocket func(c *net.UDPConn, id uint32, cfg *config, end time.Time, st *udpStats, fail *failure)) (map[string]float64, error) {
	socks := make([]*net.UDPConn, 0, cfg.conns)
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	for range cfg.conns {
		c, err := net.DialUDP(loopback.Network("udp", cfg.addr.Addr()), nil, net.UDPAddrFromAddrPort(cfg.addr))
		if err != nil {
			return nil, err
		}
		socks = append(socks, c)
	}
	var (
		wg    sync.WaitGroup
		fail  failure
		stats = make([]udpStats, len(socks))
	)
	cfg.cpu.start()
	start := time.Now()
	end := start.Add(cfg.dur)
	for i, c := range socks {
		wg.Go(func() { perSocket(c, uint32(i+1), cfg, end, &stats[i], &fail) })
	}
	wg.Wait()
	cfg.cpu.stop()
	var sum udpStats
	for _, s := range stats {
		sum.replies += s.replies
		sum.lost += s.lost
		sum.late += s.late
		sum.ioErrs += s.ioErrs
	}
	m := map[string]float64{
		"replies_per_s": float64(sum.replies) / cfg.dur.Seconds(),
		"loss_pct":      0,
		"errors":        float64(sum.ioErrs),
	}
	cfg.cpu.add(m, "cpu_us_per_reply", float64(sum.replies))
	if n := sum.replies + sum.lost; n > 0 {
		m["loss_pct"] = 100 * float64(sum.lost) / float64(n)
	}
	if sum.late > 0 {
		fmt.Fprintf(os.Stderr, "load: %s: %d replies came after their datagram was counted lost\n", mode, sum.late)
	}
	if err := fail.get(); err != nil {
		return m, err
	}
	if sum.replies == 0 {
		return m, errors.New("no reply at all")
	}
	return m, nil
}

// slot is one place in a socket's window. Slot i sends the sequence
// numbers i, i+W, i+2W, ... (W the window), so a reply's sequence number
// names its slot.
type slot struct {
	seq  uint64
	sent time.Time
	busy bool // in flight: sent, neither answered nor lost
	lost bool // seq was declared lost
}

// udpSocket keeps the window of one socket full until end: it sends a
// datagram for every free slot (one sendmmsg for all of them), reads
// replies (one recvmmsg for up to a window), and frees the slot of each
// verified reply and of each datagram unanswered after cfg.timeout.
func udpSocket(c *net.UDPConn, id uint32, cfg *config, end time.Time, st *udpStats, fail *failure) {
	var bc batchConn = ipv4.NewPacketConn(c)
	if cfg.addr.Addr().Is6() {
		bc = ipv6.NewPacketConn(c)
	}
	w := cfg.window
	slots := make([]slot, w)
	for i := range slots {
		slots[i].seq = uint64(i) // the first send advances it to i+W
	}
	out := make([]ipv4.Message, w)
	in := make([]ipv4.Message, w)
	for i := range w {
		out[i].Buffers = [][]byte{make([]byte, cfg.size)}
		in[i].Buffers = [][]byte{make([]byte, cfg.size+1)} // +1: a longer reply shows
	}
	deadline := time.Time{}
	for fail.get() == nil {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		// Free the slots of datagrams unanswered for too long.
		oldest := now
		for i := range slots {
			s := &slots[i]
			if s.busy && now.Sub(s.sent) >= cfg.timeout {
				s.busy, s.lost = false, true
				st.lost++
			}
			if s.busy && s.sent.Before(oldest) {
				oldest = s.sent
			}
		}
		// Fill every free slot with a new datagram.
		k := 0
		for i := range slots {
			s := &slots[i]
			if s.busy {
				continue
			}
			s.seq += uint64(w)
			s.sent, s.busy, s.lost = now, true, false
			fillMsg(out[k].Buffers[0], id, s.seq)
			k++
		}
		for off := 0; off < k; {
			n, err := bc.WriteBatch(out[off:k], 0)
			if err != nil {
				st.ioErr(id, "send", err) // the unsent datagrams time out as lost
				break
			}
			off += n
		}
		// Wake up at the latest when the oldest datagram in flight times out
		// (or at end). The deadline is only moved once it has passed: an
		// early wake-up costs one empty pass, not a missed loss.
		if !now.Before(deadline) {
			deadline = oldest.Add(cfg.timeout)
			if deadline.After(end) {
				deadline = end
			}
			c.SetReadDeadline(deadline)
		}
		n, err := bc.ReadBatch(in, 0)
		for i := range n {
			b := in[i].Buffers[0][:in[i].N]
			seq := msgSeq(b)
			if !checkMsg(b, cfg.size, id, seq) {
				fail.set(fmt.Errorf("socket %d: a reply (%d bytes, claims seq %d) matches no datagram sent", id, len(b), seq))
				return
			}
			s := &slots[seq%uint64(w)]
			switch {
			case s.busy && s.seq == seq:
				s.busy = false
				st.replies++
			case seq == s.seq && !s.lost:
				fail.set(fmt.Errorf("socket %d: a second reply to datagram %d", id, seq))
				return
			case seq <= s.seq:
				st.late++ // an earlier datagram of this slot, counted lost
			default:
				fail.set(fmt.Errorf("socket %d: reply with seq %d, which was never sent", id, seq))
				return
			}
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			st.ioErr(id, "receive", err) // e.g. ECONNREFUSED when the server is gone
			if errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}
}
