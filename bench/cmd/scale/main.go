// Command scale is the listener-scale benchmark: it opens N listeners on
// 127.0.0.1, ports base..base+N-1, either with p2pd's Daemon.ListenAll or
// with plain net.Listen / net.ListenPacket plus one goroutine each, and
// reports what opening, holding and closing them costs.
//
// One process measures one run (the run script starts a fresh process per
// impl, proto, N and round), so the numbers do not depend on what an
// earlier run left in the heap. It prints exactly one JSON line on stdout:
//
//	{"bench":"scale-tcp-4000","impl":"p2pd","round":1,"metrics":{"open_ms":..,"close_ms":..,
//	 "bytes_per_listener":..,"heap_per_listener":..,"stack_per_listener":..,"go_per_listener":..,"fds":..}}
//
// Metrics:
//
//	open_ms             wall time to open all N (ListenAll, or the plain loop
//	                    including starting the goroutines)
//	close_ms            wall time of Daemon.Close, or of closing every listener
//	                    and waiting for every goroutine
//	bytes_per_listener  VmRSS delta / N (noisy at small N)
//	heap_per_listener   HeapInuse delta / N
//	stack_per_listener  StackInuse delta / N
//	go_per_listener     (Sys - HeapReleased) delta / N: all memory the Go
//	                    runtime holds from the OS, heap, stacks and off-heap
//	                    structures (poll descriptors, GC metadata, spans)
//	fds                 open file descriptors added
//
// Memory is measured after opening, two GCs, debug.FreeOSMemory and once
// every listener goroutine is parked. Then the listeners are checked with
// traffic on the first, a middle and the last port; a listener that does
// not answer is an error (exit status 1).
//
// Usage:
//
//	go run ./cmd/scale -impl p2pd -proto udp -n 4000 [-round 1] [-base 20000] [-memprofile heap.pprof]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/p2pd/p2pd"
)

type result struct {
	Bench   string `json:"bench"`
	Impl    string `json:"impl"`
	Round   int    `json:"round"`
	Metrics scores `json:"metrics"`
}

type scores struct {
	OpenMS           float64 `json:"open_ms"`
	CloseMS          float64 `json:"close_ms"`
	BytesPerListener float64 `json:"bytes_per_listener"`
	HeapPerListener  float64 `json:"heap_per_listener"`
	StackPerListener float64 `json:"stack_per_listener"`
	GoPerListener    float64 `json:"go_per_listener"`
	FDs              int     `json:"fds"`
}

// closer closes a set of listeners and returns once all their goroutines
// have ended.
type closer func() error

var loopback = netip.MustParseAddr("127.0.0.1")

func main() {
	impl := flag.String("impl", "p2pd", "implementation: p2pd or plain")
	proto := flag.String("proto", "tcp", "protocol: tcp or udp")
	n := flag.Int("n", 1000, "number of listeners (ports base..base+n-1)")
	round := flag.Int("round", 1, "round number, copied to the output")
	base := flag.Int("base", 0, "first port; 0 picks a free range (from 20000 up, then below)")
	memprofile := flag.String("memprofile", "", "write a heap profile (every allocation sampled) after opening to `file`")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the opening to `file`")
	flag.Parse()

	if err := run(*impl, *proto, *n, *round, *base, *memprofile, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func run(impl, proto string, n, round, base int, memprofile, cpuprofile string) error {
	if impl != "p2pd" && impl != "plain" {
		return fmt.Errorf("-impl %q: want p2pd or plain", impl)
	}
	if proto != "tcp" && proto != "udp" {
		return fmt.Errorf("-proto %q: want tcp or udp", proto)
	}
	if n < 1 || n > 65535 {
		return fmt.Errorf("-n %d: want 1..65535", n)
	}
	if memprofile != "" {
		// Sample every allocation so that small per-listener objects show
		// up exactly. It slows allocation: open_ms of a profiled run is
		// not comparable.
		runtime.MemProfileRate = 1
	}
	if err := raiseFDLimit(n); err != nil {
		return err
	}
	if base == 0 {
		var err error
		if base, err = pickBase(proto, n); err != nil {
			return err
		}
	} else if base < 1 || base+n-1 > 65535 {
		return fmt.Errorf("-base %d -n %d: ports %d..%d are not all in 1..65535", base, n, base, base+n-1)
	}
	open := openPlain
	if impl == "p2pd" {
		open = openP2PD
	}

	// Warm-up: open and close one listener on an OS-chosen port, so that
	// the netpoller (epoll and its event fd), the first poll descriptors
	// and the code paths exist before the baseline is taken.
	if c, err := open(proto, 0, 1); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	} else if err := c(); err != nil {
		return fmt.Errorf("warm-up close: %w", err)
	}

	before := measure()
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	start := time.Now()
	closeAll, err := open(proto, base, n)
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	openDur := time.Since(start)
	if err != nil {
		return fmt.Errorf("open %d %s listeners on 127.0.0.1:%d-%d: %w", n, proto, base, base+n-1, err)
	}
	closed := false
	defer func() {
		if !closed {
			closeAll()
		}
	}()
	if !waitParked(before, 10*time.Second) {
		fmt.Fprintf(os.Stderr, "scale: warning: only %d of %d new goroutines parked after 10s\n",
			waitingGoroutines()-before.waiting, runtime.NumGoroutine()-before.goroutines)
	}
	after := measure()
	if memprofile != "" {
		if err := writeHeapProfile(memprofile); err != nil {
			return err
		}
	}

	if err := verify(impl, proto, base, n); err != nil {
		return err
	}
	// Let the connections the check made end (p2pd runs a pipe per
	// accepted connection), so that close_ms times the listeners only.
	waitGoroutines(after.goroutines, 2*time.Second)

	start = time.Now()
	err = closeAll()
	closeDur := time.Since(start)
	closed = true
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if !waitGoroutines(before.goroutines, 2*time.Second) {
		return fmt.Errorf("after close %d goroutines run, %d before opening", runtime.NumGoroutine(), before.goroutines)
	}

	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	out := result{
		Bench: fmt.Sprintf("scale-%s-%d", proto, n),
		Impl:  impl,
		Round: round,
		Metrics: scores{
			OpenMS:           ms(openDur),
			CloseMS:          ms(closeDur),
			BytesPerListener: per(after.rss, before.rss),
			HeapPerListener:  per(after.mem.HeapInuse, before.mem.HeapInuse),
			StackPerListener: per(after.mem.StackInuse, before.mem.StackInuse),
			GoPerListener:    per(after.mem.Sys-after.mem.HeapReleased, before.mem.Sys-before.mem.HeapReleased),
			FDs:              after.fds - before.fds,
		},
	}
	line, err := json.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// openP2PD opens n listeners with one ListenAll call on the IPv4 route of
// 127.0.0.1. base 0 opens one listener on a port the OS chooses.
func openP2PD(proto string, base, n int) (closer, error) {
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		_ = p.Send(msg, from) // echo
	})}, MaxListeners: n, // the default cap is 1024
	}
	pr := p2pd.TCP
	if proto == "udp" {
		pr = p2pd.UDP
	}
	target := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{loopback}}
	ports := p2pd.Ports{{Start: uint16(base), End: uint16(base + n - 1)}}
	if base == 0 {
		ports = p2pd.Ports{p2pd.Port(0)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := d.ListenAll(ctx, []p2pd.Target{target}, ports, []p2pd.Proto{pr}, p2pd.IPv4); err != nil {
		d.Close()
		return nil, err
	}
	return d.Close, nil
}

// openPlain opens n listeners with the net package, each with one
// goroutine: a TCP listener and a goroutine blocked in Accept (it closes
// what it accepts), or a UDP socket and a goroutine blocked in ReadFrom (it
// echoes). This is the baseline "a plain socket plus one goroutine".
// Closing closes every socket and waits for every goroutine, as
// Daemon.Close does.
func openPlain(proto string, base, n int) (closer, error) {
	var (
		wg      sync.WaitGroup
		closers = make([]io.Closer, 0, n)
	)
	closeAll := func() error {
		var errs []error
		for _, c := range closers {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	for i := range n {
		addr := netip.AddrPortFrom(loopback, uint16(base+i)).String()
		if base == 0 {
			addr = "127.0.0.1:0"
		}
		if proto == "tcp" {
			ln, err := net.Listen("tcp4", addr)
			if err != nil {
				closeAll()
				return nil, err
			}
			closers = append(closers, ln)
			wg.Go(func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return // closed
					}
					c.Close()
				}
			})
			continue
		}
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			closeAll()
			return nil, err
		}
		closers = append(closers, pc)
		wg.Go(func() {
			// 64 bytes, not 64 KiB: the baseline is a plain socket plus
			// one goroutine, and an idle listener has no reason to hold
			// a 64 KiB buffer; the library should not either. The
			// check's datagrams are a few bytes.
			buf := make([]byte, 64)
			for {
				m, from, err := pc.ReadFrom(buf)
				if err != nil {
					return // closed
				}
				_, _ = pc.WriteTo(buf[:m], from)
			}
		})
	}
	return closeAll, nil
}

// verify checks the first, a middle and the last listener with traffic:
// for p2pd an echo on TCP and UDP; for plain TCP an accepted connection
// (the server closes it: the client reads EOF), for plain UDP an echo.
func verify(impl, proto string, base, n int) error {
	ports := []int{base}
	for _, p := range []int{base + n/2, base + n - 1} {
		if p != ports[len(ports)-1] {
			ports = append(ports, p)
		}
	}
	for _, port := range ports {
		addr := netip.AddrPortFrom(loopback, uint16(port)).String()
		var err error
		switch {
		case proto == "udp":
			err = checkUDP(addr)
		case impl == "p2pd":
			err = checkTCPEcho(addr)
		default:
			err = checkTCPAccept(addr)
		}
		if err != nil {
			return fmt.Errorf("check %s %s listener %s: %w", impl, proto, addr, err)
		}
	}
	return nil
}

var probe = []byte("scale-probe")

func checkTCPEcho(addr string) error {
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(probe); err != nil {
		return err
	}
	got := make([]byte, len(probe))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("no echo: %w", err)
	}
	if !bytes.Equal(got, probe) {
		return fmt.Errorf("echo %q, sent %q", got, probe)
	}
	return nil
}

func checkTCPAccept(addr string) error {
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	// The listener's goroutine accepts and closes: EOF proves it accepted
	// (a dial alone only proves the kernel's backlog took it).
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		return fmt.Errorf("connection not accepted and closed: read returned %v", err)
	}
	return nil
}

func checkUDP(addr string) error {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	got := make([]byte, 64)
	var last error
	for range 3 { // loopback does not drop, but do not fail on one lost datagram
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(probe); err != nil {
			return err
		}
		m, err := c.Read(got)
		if err != nil {
			last = err
			continue
		}
		if !bytes.Equal(got[:m], probe) {
			return fmt.Errorf("echo %q, sent %q", got[:m], probe)
		}
		return nil
	}
	return fmt.Errorf("no echo: %w", last)
}
