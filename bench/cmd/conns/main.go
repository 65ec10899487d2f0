// Command conns measures what an open TCP connection costs a server: it
// serves echo on 127.0.0.1 (a p2pd Daemon, or the stdlib goroutine per
// connection with a 4 KiB buffer as the plain baseline), starts a child
// process (itself with -client) that opens N connections to it, and
// reports the server's memory per connection once they are all counted
// and settled. The clients live in another process because a process may
// hold at most RLIMIT_NOFILE descriptors (20,000 here): the server holds N
// and a few, the child the other N.
//
// Modes: idle (the connections send nothing) and msg (each sends one
// 64-byte message a second and checks its echo, as the soak's load phase
// does). Memory is measured as internal/soak does: heap in use plus
// goroutine stacks after GC (HeapAlloc + StackInuse), the same before the
// child connected subtracted, divided by N; and RSS likewise.
//
// It prints exactly one JSON line on stdout:
//
//	{"bench":"conns-idle-19000","impl":"p2pd","round":1,"metrics":{"heap_stack_per_conn":..,
//	 "rss_per_conn":..,"goroutines_per_conn":..,"connect_s":..,"errors":..}}
//
// Usage:
//
//	go run ./cmd/conns -impl p2pd -mode idle -n 19000 [-settle 5s] [-round 1]
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxLife bounds every process of a run, the child included.
const maxLife = 5 * time.Minute

// childEnv is set in the child's environment.
const childEnv = "P2PD_BENCH_CONNS_CHILD"

var loopbackAddr = netip.MustParseAddr("127.0.0.1")

func main() {
	impl := flag.String("impl", "p2pd", "server: p2pd or plain")
	mode := flag.String("mode", "idle", "idle or msg (one 64-byte message per connection per second)")
	n := flag.Int("n", 1000, "connections")
	round := flag.Int("round", 1, "round number, copied to the output")
	settle := flag.Duration("settle", 5*time.Second, "wait this long after the last connection is counted, before measuring")
	client := flag.String("client", "", "internal: run as the client child, connecting to this address")
	flag.Parse()
	time.AfterFunc(maxLife, func() {
		fmt.Fprintln(os.Stderr, "conns: watchdog: still running after", maxLife)
		os.Exit(3)
	})
	var err error
	if *client != "" {
		err = runClient(*client, *mode, *n)
	} else {
		err = run(*impl, *mode, *n, *round, *settle)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "conns:", err)
		os.Exit(1)
	}
}

type result struct {
	Bench   string             `json:"bench"`
	Impl    string             `json:"impl"`
	Round   int                `json:"round"`
	Metrics map[string]float64 `json:"metrics"`
}

func run(impl, mode string, n, round int, settle time.Duration) error {
	if mode != "idle" && mode != "msg" {
		return fmt.Errorf("-mode %q: want idle or msg", mode)
	}
	if n < 1 || n > 60000 {
		return fmt.Errorf("-n %d: want 1..60000", n)
	}
	if settle < 0 || settle > time.Minute {
		return fmt.Errorf("-settle %v: want 0..1m", settle)
	}
	if err := raiseNoFile(n + 64); err != nil {
		return err
	}
	var (
		srv server
		err error
	)
	switch impl {
	case "p2pd":
		srv, err = startP2PD(n)
	case "plain":
		srv, err = startPlain()
	default:
		return fmt.Errorf("-impl %q: want p2pd or plain", impl)
	}
	if err != nil {
		return err
	}
	defer srv.close()

	m0, rss0, g0 := heapStack(), rss(), runtime.NumGoroutine()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-client", srv.addr().String(), "-mode", mode, "-n", strconv.Itoa(n))
	cmd.Env = append(os.Environ(), childEnv+"=1") // lets a test binary act as the child
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // closing it tells the child to stop
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if l, err := expect(lines, "connected", 2*time.Minute); err != nil {
		return fmt.Errorf("client: %w", err)
	} else if l != fmt.Sprintf("connected %d", n) {
		return fmt.Errorf("client: %q, want %d connections", l, n)
	}
	// Wait until the server has accepted and counts every connection.
	deadline := time.Now().Add(30 * time.Second)
	for srv.conns() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("the server counts %d connections of %d after 30s", srv.conns(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	connectS := time.Since(start).Seconds()
	time.Sleep(settle) // p2pd may release what idle connections hold
	runtime.GC()
	m1, rss1, g1 := heapStack(), rss(), runtime.NumGoroutine()
	if got := srv.conns(); got != n {
		return fmt.Errorf("the server counts %d connections after settling, want %d", got, n)
	}

	stdin.Close()
	done, err := expect(lines, "done", 30*time.Second)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	cerr := cmd.Wait()
	stopped = true
	if cerr != nil {
		return fmt.Errorf("client: %w", cerr)
	}
	var sent, ok, errs int
	if _, err := fmt.Sscanf(done, "done sent=%d ok=%d errors=%d", &sent, &ok, &errs); err != nil {
		return fmt.Errorf("client: %q: %w", done, err)
	}
	if mode == "msg" && ok == 0 {
		return errors.New("client: no message echoed")
	}
	per := func(a, b int64) float64 { return float64(a-b) / float64(n) }
	out := result{
		Bench: fmt.Sprintf("conns-%s-%d", mode, n),
		Impl:  impl,
		Round: round,
		Metrics: map[string]float64{
			"heap_stack_per_conn": per(m1, m0),
			"rss_per_conn":        per(rss1, rss0),
			"goroutines_per_conn": per(int64(g1), int64(g0)),
			"connect_s":           connectS,
			"errors":              float64(errs),
		},
	}
	if mode == "msg" {
		out.Metrics["msgs_ok"] = float64(ok)
	}
	line, err := json.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	if errs > 0 {
		return fmt.Errorf("client: %d errors (%d sent, %d echoed)", errs, sent, ok)
	}
	return nil
}

// expect waits for the next line starting with prefix, skipping others.
func expect(lines <-chan string, prefix string, timeout time.Duration) (string, error) {
	t := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", fmt.Errorf("exited before printing %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-t:
			return "", fmt.Errorf("no %q line within %v", prefix, timeout)
		}
	}
}

// heapStack returns the heap in use plus the goroutine stacks, after a GC
// (internal/soak's measure).
func heapStack() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// rss returns the resident set size in bytes, 0 if unknown.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and fails
// when that leaves fewer than need descriptors.
func raiseNoFile(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return err
		}
	}
	if lim.Cur < uint64(need) {
		return fmt.Errorf("RLIMIT_NOFILE is %d: %d needed (raise ulimit -Hn)", lim.Cur, need)
	}
	return nil
}
