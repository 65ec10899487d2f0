//go:build linux

// Command soak is p2pd's load and soak test: it holds -conns TCP
// connections on -listeners listeners of one Daemon while, for -dur,
// clients come and go, an address is removed and re-added, a UDP listener
// is flooded, slowloris clients linger and callbacks panic or block; then
// it checks that every echoed message was intact and that goroutines,
// descriptors and heap are back to where they started. It prints a table
// of figures (-json: one JSON object) and exits 0 when every check passed,
// 1 when one failed or the run could not be set up, 2 when its watchdog
// fired (dur + 60 s).
//
// As root it re-executes itself in a network namespace of its own, with
// an interface soak0 (10.99.0.1/24; 10.99.1.1/24 comes and goes); the
// kernel removes the namespace when the program ends, however it ends.
// Without root it runs on loopback only (127.0.0.1) and skips the address
// phase; it then needs a hard RLIMIT_NOFILE above conns + 1100 (the load
// clients run in a helper process, the same program run with -load-client,
// so that each process holds one descriptor per connection; -inline keeps
// them in one process, which then needs 2 × conns + 1100).
//
//	go run ./internal/soak/cmd/soak -dur 60s
//	go run ./internal/soak/cmd/soak -only load -conns 10000 -json
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/p2pd/p2pd/internal/soak"
)

func main() {
	dur := flag.Duration("dur", 60*time.Second, "how long the phases run once the load connections are up")
	conns := flag.Int("conns", 10000, "TCP connections held by the load phase")
	listeners := flag.Int("listeners", 50, "load listeners (one port each)")
	port := flag.Uint("port", 20000, "first port of the load listeners")
	interval := flag.Duration("interval", time.Second, "between two messages of one load connection")
	only := flag.String("only", "", "comma-separated phases to run (default all): "+strings.Join(soak.Phases, ","))
	jsonOut := flag.Bool("json", false, "print the figures as one JSON object")
	verbose := flag.Bool("v", false, "print the daemons' logs (warnings and up) on stderr")
	inline := flag.Bool("inline", false, "run the load clients in this process (2 descriptors per connection) rather than in a helper process")
	loadClient := flag.Bool("load-client", false, "internal: be the helper process of the load clients")
	addrs := flag.String("addrs", "", "internal: the load listeners, for -load-client")
	flag.Parse()

	watchdog(*dur + 60*time.Second)
	if *loadClient {
		as, err := soak.ParseAddrs(*addrs)
		if err == nil {
			err = soak.ClientMain(as, *conns, *interval, os.Stdin, os.Stdout)
		}
		if err != nil {
			fatal(err)
		}
		return
	}
	netns := os.Geteuid() == 0
	if netns && !soak.InChild() {
		os.Exit(parent())
	}
	if netns {
		if err := soak.SetupNetns(); err != nil {
			fatal(err)
		}
	}
	cfg := soak.Config{Dur: *dur, Conns: *conns, Listeners: *listeners, PortBase: uint16(*port),
		Interval: *interval, Netns: netns, Progress: os.Stderr}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
		for _, p := range cfg.Only {
			if !contains(soak.Phases, p) {
				fatal(fmt.Errorf("unknown phase %q (phases: %s)", p, strings.Join(soak.Phases, ",")))
			}
		}
	}
	if !*inline {
		cfg.ClientCmd = func(args ...string) *exec.Cmd {
			cmd := exec.Command("/proc/self/exe", append([]string{"-load-client", "-dur", dur.String()}, args...)...)
			cmd.Stderr = os.Stderr
			return cmd
		}
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	fig, err := soak.Run(cfg)
	if err != nil {
		fatal(err)
	}
	if *jsonOut {
		if err := json.NewEncoder(os.Stdout).Encode(fig); err != nil {
			fatal(err)
		}
	} else {
		fig.WriteTable(os.Stdout)
	}
	if len(fig.Failures) > 0 {
		os.Exit(1)
	}
}

// parent runs the program again in a new network namespace and returns
// its exit code.
func parent() int {
	// Pdeathsig follows the thread that started the child: keep it.
	runtime.LockOSThread()
	cmd := soak.ChildCommand()
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() >= 0 {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	return 0
}

// watchdog ends the program with status 2 after d, whatever it is doing;
// a child it started dies with it (Pdeathsig).
func watchdog(d time.Duration) {
	time.AfterFunc(d, func() {
		fmt.Fprintf(os.Stderr, "soak: watchdog: still running after %v; goroutines:\n", d)
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		os.Exit(2)
	})
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "soak:", err)
	os.Exit(1)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
