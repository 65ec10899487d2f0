// Command load is the load generator of the echo benchmarks. It drives an
// echo server on a loopback address in one of three modes, verifies every
// byte that comes back, and prints exactly one JSON line with the results:
//
//	rr      TCP request/reply: each connection writes a message and reads
//	        its echo before the next (replies/s, p50 and p99 latency)
//	stream  TCP streaming: each connection writes continuously while it
//	        reads and checks the echoed stream (MB/s, 1 MB = 10^6 bytes)
//	udp     UDP echo, batched: each socket keeps -window datagrams in
//	        flight, sent and read with sendmmsg/recvmmsg (replies/s, loss %)
//	udp1    UDP echo, unbatched: each socket has one datagram in flight,
//	        one Write and one Read per datagram (replies/s, loss %)
//
// With -server-pid it also charges the server for the CPU time (user+sys,
// from /proc/PID/stat) it used during the measurement: cpu_us_per_reply
// (rr, udp, udp1) or cpu_us_per_mb (stream), and server_cpu_pct.
//
// -bench names the run in the output when it is not the mode's usual bench
// (udpwork-echo is mode udp against servers with -work).
//
// It exits non-zero when a reply does not match what was sent, or when
// nothing was echoed at all.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// maxDur bounds -dur; the watchdog kills the process shortly after it.
const maxDur = time.Minute

type config struct {
	mode    string
	addr    netip.AddrPort
	dur     time.Duration
	conns   int
	size    int
	window  int
	timeout time.Duration
	cpu     cpuMeter
}

// result is the JSON line load prints. Metrics hold only those of the mode.
type result struct {
	Bench   string             `json:"bench"`
	Impl    string             `json:"impl"`
	Round   int                `json:"round"`
	Metrics map[string]float64 `json:"metrics"`
}

// benchNames maps a mode to the name of its benchmark in the report.
var benchNames = map[string]string{"rr": "tcp-rr", "stream": "tcp-stream", "udp": "udp-echo", "udp1": "udp1-echo"}

func main() {
	var (
		cfg      config
		addrFlag string
		impl     string
		bench    string
		round    int
	)
	flag.StringVar(&cfg.mode, "mode", "rr", "rr, stream, udp (batched) or udp1 (one datagram in flight per socket)")
	flag.StringVar(&addrFlag, "addr", "", "the echo server's loopback address, e.g. 127.0.0.1:9000")
	flag.DurationVar(&cfg.dur, "dur", 3*time.Second, "measurement duration (at most 1m)")
	flag.IntVar(&cfg.conns, "conns", 0, "TCP connections or UDP sockets (default rr 50, stream 8, udp 8)")
	flag.IntVar(&cfg.size, "size", 0, "message size in bytes; in stream mode the size of each write (default rr 64, udp 64, stream 32768)")
	flag.IntVar(&cfg.window, "window", 32, "udp: datagrams in flight per socket")
	flag.DurationVar(&cfg.timeout, "timeout", 200*time.Millisecond, "udp: a datagram unanswered for this long is lost and replaced")
	flag.StringVar(&impl, "impl", "", "server implementation name, copied into the output")
	flag.StringVar(&bench, "bench", "", "bench name in the output (default by mode: tcp-rr, tcp-stream, udp-echo, udp1-echo)")
	flag.IntVar(&round, "round", 0, "round number, copied into the output")
	flag.IntVar(&cfg.cpu.pid, "server-pid", 0, "the server's process id: measure its CPU time during the run (Linux)")
	flag.Parse()

	if err := cfg.setup(addrFlag); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(2)
	}
	// Whatever happens (a server that stops answering mid-write, a kernel
	// hiccup), the process ends soon after its duration.
	time.AfterFunc(cfg.dur+30*time.Second, func() {
		fmt.Fprintln(os.Stderr, "load: watchdog: still running 30s after -dur, exiting")
		os.Exit(3)
	})

	var (
		m   map[string]float64
		err error
	)
	switch cfg.mode {
	case "rr":
		m, err = runRR(&cfg)
	case "stream":
		m, err = runStream(&cfg)
	case "udp":
		m, err = runUDP(&cfg)
	case "udp1":
		m, err = runUDP1(&cfg)
	}
	if bench == "" {
		bench = benchNames[cfg.mode]
	}
	if m != nil {
		line, _ := json.Marshal(result{Bench: bench, Impl: impl, Round: round, Metrics: m})
		fmt.Println(string(line))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: %s against %s on %v: %v\n", cfg.mode, impl, cfg.addr, err)
		os.Exit(1)
	}
}

func (c *config) setup(addrFlag string) error {
	if _, ok := benchNames[c.mode]; !ok {
		return fmt.Errorf("unknown -mode %q", c.mode)
	}
	a, err := loopback.ParseAddrPort(addrFlag)
	if err != nil {
		return err
	}
	if a.Port() == 0 {
		return errors.New("-addr needs a port")
	}
	c.addr = a
	if c.dur <= 0 || c.dur > maxDur {
		return fmt.Errorf("-dur must be in (0, %v]", maxDur)
	}
	if c.conns == 0 {
		c.conns = map[string]int{"rr": 50, "stream": 8, "udp": 8, "udp1": 8}[c.mode]
	}
	if c.size == 0 {
		c.size = map[string]int{"rr": 64, "stream": 32 << 10, "udp": 64, "udp1": 64}[c.mode]
	}
	if c.conns < 1 || c.conns > 1000 {
		return errors.New("-conns must be in [1, 1000]")
	}
	maxSize := map[string]int{"rr": 1 << 20, "stream": 1 << 20, "udp": 65507, "udp1": 65507}[c.mode]
	if minSize := map[bool]int{true: 1, false: minMsg}[c.mode == "stream"]; c.size < minSize || c.size > maxSize {
		return fmt.Errorf("-size must be in [%d, %d] in %s mode", minSize, maxSize, c.mode)
	}
	if c.window < 1 || c.window > 1024 {
		return errors.New("-window must be in [1, 1024]")
	}
	if c.cpu.pid < 0 {
		return errors.New("-server-pid must be a process id")
	}
	if c.timeout < time.Millisecond || c.timeout > 10*time.Second {
		return errors.New("-timeout must be in [1ms, 10s]")
	}
	return nil
}

// failure records the first reply that did not match; workers stop as soon
// as one is recorded.
type failure struct {
	failed atomic.Bool // the hot path reads only this
	mu     sync.Mutex
	err    error
}

func (f *failure) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
	f.failed.Store(true)
}

func (f *failure) get() error {
	if !f.failed.Load() {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
