// Command dnsload drives a DNS server on a loopback address with Debian's
// dnsperf (an independent load generator, written in C), parses its
// summary and prints one JSON line like the other benches:
//
//	{"bench":"dns-udp","impl":"p2pd","round":1,"metrics":{"qps":..,"avg_latency_us":..,
//	 "max_latency_us":..,"lost_pct":..,"cpu_us_per_query":..,"server_cpu_pct":..,"reconnects":..}}
//
// reconnects (TCP only) counts the connections dnsperf had to reopen.
//
// With -server-pid it charges the server for the CPU time (user+sys, from
// /proc/PID/stat) it used while dnsperf ran. dnsperf prints no latency
// percentiles (2.10 has none), only average, min, max and stddev.
//
//	dnsload -addr 127.0.0.1:5353 -proto udp -dur 3s -clients 8 -impl p2pd -server-pid 1234
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/p2pd/p2pd/bench/internal/loopback"
	"github.com/p2pd/p2pd/bench/internal/proccpu"
)

type result struct {
	Bench   string             `json:"bench"`
	Impl    string             `json:"impl"`
	Round   int                `json:"round"`
	Metrics map[string]float64 `json:"metrics"`
}

func main() {
	addr := flag.String("addr", "", "the DNS server's loopback address, e.g. 127.0.0.1:5353")
	proto := flag.String("proto", "udp", "udp or tcp")
	dur := flag.Duration("dur", 3*time.Second, "dnsperf run time (whole seconds, 1s..60s)")
	clients := flag.Int("clients", 8, "dnsperf -c: clients (sockets or connections)")
	threads := flag.Int("threads", 1, "dnsperf -T: threads (1 leaves the other CPU to the server)")
	outstanding := flag.Int("outstanding", 100, "dnsperf -q: queries outstanding at most")
	bin := flag.String("dnsperf", "dnsperf", "the dnsperf binary")
	impl := flag.String("impl", "", "server implementation name, copied into the output")
	round := flag.Int("round", 0, "round number, copied into the output")
	pid := flag.Int("server-pid", 0, "the server's process id: measure its CPU time (Linux)")
	flag.Parse()
	if err := run(*addr, *proto, *dur, *clients, *threads, *outstanding, *bin, *impl, *round, *pid); err != nil {
		fmt.Fprintln(os.Stderr, "dnsload:", err)
		os.Exit(1)
	}
}

func run(addr, proto string, dur time.Duration, clients, threads, outstanding int, bin, impl string, round, pid int) error {
	ap, err := loopback.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	if ap.Port() == 0 {
		return fmt.Errorf("-addr needs a port")
	}
	if proto != "udp" && proto != "tcp" {
		return fmt.Errorf("-proto %q: want udp or tcp", proto)
	}
	secs := int(dur / time.Second)
	if dur%time.Second != 0 || secs < 1 || secs > 60 {
		return fmt.Errorf("-dur %v: want whole seconds in 1s..60s", dur)
	}
	if clients < 1 || clients > 1000 || threads < 1 || threads > clients || outstanding < 1 || outstanding > 65535 {
		return fmt.Errorf("-clients 1..1000, -threads 1..clients, -outstanding 1..65535")
	}
	dir, err := os.MkdirTemp("", "dnsload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	qfile := filepath.Join(dir, "queries")
	if err := os.WriteFile(qfile, queries(1000), 0o600); err != nil {
		return err
	}
	fam := "inet"
	if ap.Addr().Is6() {
		fam = "inet6"
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-f", fam, "-m", proto, "-s", ap.Addr().String(), "-p", strconv.Itoa(int(ap.Port())),
		"-d", qfile, "-l", strconv.Itoa(secs), "-c", strconv.Itoa(clients), "-T", strconv.Itoa(threads),
		"-q", strconv.Itoa(outstanding), "-t", "2")
	var cpu0 time.Duration
	measured := false
	if pid > 0 {
		if cpu0, err = proccpu.Read(pid); err == nil {
			measured = true
		} else {
			fmt.Fprintln(os.Stderr, "dnsload: server CPU not measured:", err)
		}
	}
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(t0)
	var cpu1 time.Duration
	if measured {
		if cpu1, err = proccpu.Read(pid); err != nil {
			fmt.Fprintln(os.Stderr, "dnsload: server CPU not measured:", err)
			measured = false
		}
	}
	if err != nil {
		return fmt.Errorf("dnsperf said:\n%s\n%s: %w", out, bin, err)
	}
	st, err := parsePerf(string(out))
	if err != nil {
		return fmt.Errorf("dnsperf said:\n%s\n%w", out, err)
	}
	if st.completed == 0 {
		return fmt.Errorf("dnsperf said:\n%s\nno query answered", out)
	}
	m := map[string]float64{
		"qps":            st.qps,
		"avg_latency_us": math.Round(st.avgLatency*1e9) / 1e3, // dnsperf prints µs
		"max_latency_us": math.Round(st.maxLatency*1e9) / 1e3,
		"lost_pct":       100 * float64(st.lost) / float64(max(st.sent, 1)),
	}
	if measured {
		used := cpu1 - cpu0
		m["cpu_us_per_query"] = float64(used.Microseconds()) / float64(st.completed)
		m["server_cpu_pct"] = 100 * used.Seconds() / wall.Seconds()
	}
	if st.reconnections >= 0 { // TCP: a server that closes connections shows here
		m["reconnects"] = float64(st.reconnections)
	}
	line, err := json.Marshal(result{Bench: "dns-" + proto, Impl: impl, Round: round, Metrics: m})
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}

// queries returns a dnsperf data file of n A queries for distinct names.
func queries(n int) []byte {
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, "q%d.bench.p2pd.test. A\n", i)
	}
	return b
}
