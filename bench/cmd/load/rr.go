package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// runRR runs TCP request/reply: every connection writes one message, reads
// exactly its size back, checks it, and repeats until the duration ends.
func runRR(cfg *config) (map[string]float64, error) {
	conns, err := dialTCP(cfg)
	if err != nil {
		return nil, err
	}
	var (
		wg     sync.WaitGroup
		fail   failure
		ioErrs atomic.Int64
		hists  = make([]hist, len(conns))
	)
	cfg.cpu.start()
	start := time.Now()
	end := start.Add(cfg.dur)
	for i, c := range conns {
		wg.Go(func() {
			defer c.Close()
			if err := rrConn(c, uint32(i+1), cfg.size, end, &hists[i], &fail); err != nil {
				ioErrs.Add(1)
				fmt.Fprintf(os.Stderr, "load: rr connection %d: %v\n", i+1, err)
			}
		})
	}
	wg.Wait()
	cfg.cpu.stop()
	elapsed := time.Since(start)
	if elapsed < cfg.dur {
		elapsed = cfg.dur // all connections failed early; rate over the planned time
	}
	var all hist
	for i := range hists {
		all.merge(&hists[i])
	}
	m := map[string]float64{
		"replies_per_s": float64(all.n) / elapsed.Seconds(),
		"p50_us":        float64(all.quantile(0.50)) / 1e3,
		"p99_us":        float64(all.quantile(0.99)) / 1e3,
		"errors":        float64(ioErrs.Load()),
	}
	cfg.cpu.add(m, "cpu_us_per_reply", float64(all.n))
	if err := fail.get(); err != nil {
		return m, err
	}
	if all.n == 0 {
		return m, errors.New("no reply at all")
	}
	return m, nil
}

// rrConn is one connection's request/reply loop. It returns nil when the
// duration ends, the I/O error that stopped it otherwise; a mismatch is
// recorded in fail.
func rrConn(c net.Conn, id uint32, size int, end time.Time, h *hist, fail *failure) error {
	c.SetDeadline(end)
	req := make([]byte, size)
	rep := make([]byte, size)
	for seq := uint64(1); fail.get() == nil; seq++ {
		fillMsg(req, id, seq)
		t0 := time.Now()
		if _, err := c.Write(req); err != nil {
			return ignoreDeadline(err)
		}
		if _, err := io.ReadFull(c, rep); err != nil {
			return ignoreDeadline(err)
		}
		h.add(int64(time.Since(t0)))
		if !checkMsg(rep, size, id, seq) {
			fail.set(fmt.Errorf("connection %d: reply to request %d differs from the request (got seq %d)", id, seq, msgSeq(rep)))
			return nil
		}
	}
	return nil
}

// ignoreDeadline turns the timeout that ends the run into nil.
func ignoreDeadline(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// dialTCP opens cfg.conns connections before the clock starts.
func dialTCP(cfg *config) ([]net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	conns := make([]net.Conn, 0, cfg.conns)
	for range cfg.conns {
		c, err := d.Dial(loopback.Network("tcp", cfg.addr.Addr()), cfg.addr.String())
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}
