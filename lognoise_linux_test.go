package p2pd

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// logChildEnv makes TestAcceptErrorLogLimited the child process.
const logChildEnv = "P2PD_LOGNOISE_CHILD"

// TestAcceptErrorLogLimited: a daemon at its descriptor limit, with many
// listeners whose accepts all fail (EMFILE) and retry, logs the repeated
// warning once per kind and interval, not once per listener and retry.
// The limit is set in a child process (it is process-wide).
func TestAcceptErrorLogLimited(t *testing.T) {
	if os.Getenv(logChildEnv) != "" {
		logNoiseChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptErrorLogLimited$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), logChildEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var warnings, acceptErrors = -1, -1
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "listen "):
			// Connections the child cannot accept: the kernel queues
			// them, accept fails with EMFILE, the listener retries.
			for range 3 {
				c, err := net.DialTimeout("tcp", strings.TrimPrefix(line, "listen "), 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
		case strings.HasPrefix(line, "counts "):
			fmt.Sscanf(line, "counts warnings=%d accept_errors=%d", &warnings, &acceptErrors)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	t.Logf("%d accept errors, %d warnings logged", acceptErrors, warnings)
	if acceptErrors < 40 {
		t.Fatalf("only %d accept errors: the child did not reach its descriptor limit", acceptErrors)
	}
	if warnings > 1 {
		t.Fatalf("%d warnings for %d accept errors: want 1 per kind and interval", warnings, acceptErrors)
	}
}

// logNoiseChild opens 40 listeners, lowers its descriptor limit to what it
// holds, lets the parent connect, and counts what its logger got.
func logNoiseChild(t *testing.T) {
	var warnings atomic.Int32
	log := slog.New(levelCounter{slog.LevelWarn, &warnings})
	d := &Daemon{PipeConfig: PipeConfig{Logger: log, OnMsg: echoCB}, WatchInterval: -1}
	defer d.Close()
	lo := Route{Family: IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	r, _ := lo.Bind("", 0)
	var specs []Specific
	for range 40 {
		specs = append(specs, Specific{Route: r, Proto: TCP})
	}
	ps, err := d.ListenSpecific(context.Background(), specs)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old)
	lim := old
	lim.Cur = uint64(len(fds)) // every descriptor the process may have is open (ReadDir's own is closed again)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		fmt.Println("listen", p.LocalAddr())
	}
	time.Sleep(3 * time.Second) // the accept loops fail and retry meanwhile
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	var acceptErrors uint64
	for _, p := range ps {
		acceptErrors += p.Stats().AcceptErrors
	}
	fmt.Printf("counts warnings=%d accept_errors=%d\n", warnings.Load(), acceptErrors)
}
