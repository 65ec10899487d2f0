package main

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// runStream runs TCP streaming: on every connection a writer sends the
// connection's byte stream in -size writes while a reader checks the echo
// against the same stream. The rate counts verified bytes only.
func runStream(cfg *config) (map[string]float64, error) {
	conns, err := dialTCP(cfg)
	if err != nil {
		return nil, err
	}
	s := newStream(max(cfg.size, 32<<10))
	var (
		wg       sync.WaitGroup
		fail     failure
		ioErrs   atomic.Int64
		verified atomic.Int64
	)
	cfg.cpu.start()
	start := time.Now()
	end := start.Add(cfg.dur)
	for i, c := range conns {
		id := uint32(i + 1)
		c.SetDeadline(end)
		var pair sync.WaitGroup
		pair.Add(2)
		wg.Go(func() {
			defer pair.Done()
			for o := s.start(id); fail.get() == nil; o += uint64(cfg.size) {
				if _, err := c.Write(s.chunk(o, cfg.size)); err != nil {
					if err = ignoreDeadline(err); err != nil {
						ioErrs.Add(1)
						fmt.Fprintf(os.Stderr, "load: stream connection %d: write: %v\n", id, err)
					}
					return
				}
			}
		})
		wg.Go(func() {
			defer pair.Done()
			buf := make([]byte, s.maxChunk)
			o := s.start(id)
			for fail.get() == nil {
				n, err := c.Read(buf)
				if !s.check(buf[:n], o) {
					fail.set(fmt.Errorf("connection %d: echoed stream differs from the sent stream within bytes %d..%d", id, o-s.start(id), o-s.start(id)+uint64(n)))
					return
				}
				o += uint64(n)
				verified.Add(int64(n))
				if err != nil {
					if err = ignoreDeadline(err); err != nil {
						ioErrs.Add(1)
						fmt.Fprintf(os.Stderr, "load: stream connection %d: read: %v\n", id, err)
					}
					return
				}
			}
		})
		wg.Go(func() { pair.Wait(); c.Close() })
	}
	wg.Wait()
	cfg.cpu.stop()
	m := map[string]float64{
		"mb_per_s": float64(verified.Load()) / 1e6 / cfg.dur.Seconds(),
		"errors":   float64(ioErrs.Load()),
	}
	cfg.cpu.add(m, "cpu_us_per_mb", float64(verified.Load())/1e6)
	if err := fail.get(); err != nil {
		return m, err
	}
	if verified.Load() == 0 {
		return m, errors.New("nothing echoed")
	}
	return m, nil
}
