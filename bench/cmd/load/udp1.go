package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// runUDP1 runs unbatched UDP echo: cfg.conns connected sockets, each with
// one datagram in flight, sent with one Write and read with one Read (the
// way most clients talk to a server). The server then sees small batches:
// at most cfg.conns datagrams wait at any time.
func runUDP1(cfg *config) (map[string]float64, error) { return runUDPWith(cfg, "udp1", udp1Socket) }

// udp1Socket sends datagram seq, reads until its echo comes back or
// cfg.timeout passes (then it is lost), and sends seq+1, until end.
// Replies to earlier datagrams (counted lost) are skipped.
func udp1Socket(c *net.UDPConn, id uint32, cfg *config, end time.Time, st *udpStats, fail *failure) {
	out := make([]byte, cfg.size)
	in := make([]byte, cfg.size+1) // +1: a longer reply shows
	for seq := uint64(1); fail.get() == nil; seq++ {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		fillMsg(out, id, seq)
		if _, err := c.Write(out); err != nil {
			st.ioErr(id, "send", err)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond) // e.g. ECONNREFUSED: do not spin
			continue
		}
		deadline := now.Add(cfg.timeout)
		if deadline.After(end) {
			deadline = end
		}
		c.SetReadDeadline(deadline)
		for {
			n, err := c.Read(in)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					if time.Now().Before(end) {
						st.lost++ // not at the end: a reply in flight then is no loss
					}
				} else {
					st.ioErr(id, "receive", err)
					if errors.Is(err, net.ErrClosed) {
						return
					}
				}
				break
			}
			b := in[:n]
			got := msgSeq(b)
			if !checkMsg(b, cfg.size, id, got) {
				fail.set(fmt.Errorf("socket %d: a reply (%d bytes, claims seq %d) matches no datagram sent", id, len(b), got))
				return
			}
			if got == seq {
				st.replies++
				break
			}
			if got > seq {
				fail.set(fmt.Errorf("socket %d: reply with seq %d, which was never sent", id, got))
				return
			}
			st.late++ // an earlier datagram, counted lost
		}
	}
}
