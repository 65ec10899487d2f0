// Command echoserver is an echo server for the load benchmarks: one process,
// one implementation (p2pd, the standard library, x/net batch I/O, raw
// blocking recvmmsg/sendmmsg, gnet),
// one protocol, one loopback address. It prints "ready <addr>" on stdout once
// it serves, and stops on SIGINT/SIGTERM or after -for, whichever comes first.
// With -work every implementation spends that much CPU on each message
// before it echoes it (the same function for all, see work.go).
// As it stops it prints a "cpu ..." line: the process's CPU time since it was
// ready, against the wall time, and its busiest threads' (Linux).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// server is one implementation. start serves proto on addr (port already
// chosen) until ctx ends; it returns once the server accepts traffic, and
// wait blocks until the server has stopped and released everything.
type starter func(ctx context.Context, proto string, addr netip.AddrPort) (wait func() error, err error)

var impls = map[string]starter{
	"p2pd":   startP2PD,
	"stdlib": startStdlib,
	"batch":  startBatch,
	"raw":    startRaw,
	"gnet":   startGnet,
	// p2pd-fanout is p2pd with one socket per GOMAXPROCS (PipeConfig.Sockets -1).
	"p2pd-fanout": func(ctx context.Context, proto string, addr netip.AddrPort) (func() error, error) {
		p2pdSockets = -1
		return startP2PD(ctx, proto, addr)
	},
}

func main() {
	impl := flag.String("impl", "p2pd", "implementation: p2pd, p2pd-fanout, stdlib, batch (UDP only), raw (UDP only, Linux) or gnet")
	proto := flag.String("proto", "udp", "protocol: tcp or udp")
	addrFlag := flag.String("addr", "127.0.0.1:0", "loopback address to serve; port 0 picks a free port")
	lifetime := flag.Duration("for", 10*time.Minute, "hard maximum lifetime")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to `file`")
	flag.IntVar(&p2pdSockets, "fanout", 0, "p2pd: sockets per listener (PipeConfig.Sockets; 0 or 1: one, -1: one per GOMAXPROCS)")
	workDur := flag.Duration("work", 0, "CPU work per message before the echo, e.g. 20us (a calibrated loop; every implementation)")
	flag.Parse()
	if n, err := calibrateWork(*workDur); err != nil {
		fmt.Fprintln(os.Stderr, "echoserver:", err)
		os.Exit(2)
	} else if n > 0 {
		fmt.Fprintf(os.Stderr, "echoserver: -work %v: %d rounds per message\n", *workDur, n)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "echoserver:", err)
			os.Exit(1)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if err := run(*impl, *proto, *addrFlag, *lifetime); err != nil {
		fmt.Fprintln(os.Stderr, "echoserver:", err)
		os.Exit(1)
	}
}

func run(impl, proto, addrFlag string, lifetime time.Duration) error {
	start, ok := impls[impl]
	if !ok {
		return fmt.Errorf("unknown -impl %q", impl)
	}
	if proto != "tcp" && proto != "udp" {
		return fmt.Errorf("unknown -proto %q", proto)
	}
	if lifetime <= 0 {
		return fmt.Errorf("-for must be positive")
	}
	addr, err := loopback.ServerAddr(addrFlag)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, lifetime)
	defer cancel()

	wait, err := start(ctx, proto, addr)
	if err != nil {
		return fmt.Errorf("%s %s on %v: %w", impl, proto, addr, err)
	}
	fmt.Printf("ready %v\n", addr)
	cpu := startCPU()
	<-ctx.Done()
	cpu.report(os.Stdout)
	// A server that does not stop within a few seconds must not linger.
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s did not stop within 5s", impl)
	}
}
