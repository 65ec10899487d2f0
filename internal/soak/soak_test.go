//go:build linux

package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/testnet"
	"golang.org/x/sys/unix"
)

// TestTenThousandConns holds 10,000 TCP connections on 50 listeners of
// one Daemon, each exchanging messages, in the soak program built without
// the race detector (which cannot follow that many goroutines).
func TestTenThousandConns(t *testing.T) {
	const conns = 10000
	if os.Geteuid() != 0 {
		// Daemon and clients each hold one descriptor per connection.
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Max < conns+2000 {
			t.Skipf("needs root or a hard RLIMIT_NOFILE of %d (have %d)", conns+2000, lim.Max)
		}
	}
	bin := buildSoak(t)
	f := runSoak(t, bin, 3*time.Minute, "-only", "load", "-conns", "10000", "-listeners", "50", "-dur", "5s", "-json")
	t.Logf("%s: %d connections held in %.1f s; memory per connection (%s): %.0f B heap+stack, %.0f B RSS",
		f.Mode, f.ConnsHeld, f.ConnectSec, f.MemScope, f.HeapPerConn, f.RSSPerConn)
	t.Logf("%d messages sent, %d acked, %d verified; goroutines %d -> %d, fds %d -> %d, heap %d -> %d",
		f.TCPSent, f.TCPAcked, f.TCPVerified, f.GoroutineStart, f.GoroutineEnd, f.FDStart, f.FDEnd, f.HeapStart, f.HeapEnd)
	if f.ConnsHeld != conns || f.LoadDialErrors != 0 {
		t.Errorf("%d connections held of %d, %d dial errors", f.ConnsHeld, conns, f.LoadDialErrors)
	}
	if f.LoadDropped != 0 || f.LoadRejected != 0 || f.LoadServerErrors != 0 {
		t.Errorf("%d dropped, %d rejected, %d server errors", f.LoadDropped, f.LoadRejected, f.LoadServerErrors)
	}
	if f.LoadMsgs < conns || f.TCPAcked != f.TCPSent || f.TCPVerified != f.TCPAcked {
		t.Errorf("messages: %d sent, %d acked, %d verified (load: %d)", f.TCPSent, f.TCPAcked, f.TCPVerified, f.LoadMsgs)
	}
	if f.HeapPerConn <= 0 {
		t.Errorf("memory per connection not measured: %.0f", f.HeapPerConn)
	}
}

// TestSoak runs every phase at once in the soak program, in a network
// namespace of its own: about a minute, 10 s with -short.
func TestSoak(t *testing.T) {
	testnet.Require(t)
	dur := 60 * time.Second
	if testing.Short() {
		dur = 10 * time.Second
	}
	bin := buildSoak(t)
	f := runSoak(t, bin, dur+3*time.Minute, "-dur", dur.String(), "-conns", "2000", "-listeners", "50", "-json")
	var table bytes.Buffer
	f.WriteTable(&table)
	t.Logf("figures:\n%s", table.String())
	if f.Mode != "netns" {
		t.Errorf("mode %q, want netns", f.Mode)
	}
	if f.TCPVerified == 0 || f.TCPAcked != f.TCPSent || f.TCPVerified != f.TCPAcked || f.TCPCorrupt != 0 {
		t.Errorf("TCP messages: %d sent, %d acked, %d verified, %d corrupt", f.TCPSent, f.TCPAcked, f.TCPVerified, f.TCPCorrupt)
	}
	if f.ConnsHeld != 2000 || f.LoadDropped != 0 || f.ChurnConns == 0 || f.ChurnErrors != 0 {
		t.Errorf("load: %d held, %d dropped; churn: %d conns, %d errors", f.ConnsHeld, f.LoadDropped, f.ChurnConns, f.ChurnErrors)
	}
	if f.AddrCycles == 0 || f.EventsFailed != 2*f.AddrCycles || f.EventsRestored != 2*f.AddrCycles || f.EventsUnexpected != 0 || f.AddrRestoreOK != f.AddrCycles {
		t.Errorf("address: %d cycles, %d failed, %d restored, %d unexpected events, served again %d times",
			f.AddrCycles, f.EventsFailed, f.EventsRestored, f.EventsUnexpected, f.AddrRestoreOK)
	}
	if f.FloodDropped == 0 || f.FloodNotRecovered != 0 || f.FloodHeapGrowth > floodHeapMax {
		t.Errorf("flood: %d dropped, %d rounds not recovered, heap +%d", f.FloodDropped, f.FloodNotRecovered, f.FloodHeapGrowth)
	}
	if f.SlowClosed == 0 || f.SlowNotClosed != 0 || f.EdgeErrors != 0 {
		t.Errorf("slow: %d closed, %d not closed; normal clients: %d errors", f.SlowClosed, f.SlowNotClosed, f.EdgeErrors)
	}
	if f.PanicsSent == 0 || f.PanicsCounted != uint64(f.PanicsSent) || f.MisbehaveErrors != 0 {
		t.Errorf("panics: %d sent, %d counted, %d errors", f.PanicsSent, f.PanicsCounted, f.MisbehaveErrors)
	}
	if f.GoroutineEnd > f.GoroutineStart+endGoroutineSlack || f.FDEnd > f.FDStart+endFDSlack {
		t.Errorf("goroutines %d -> %d, fds %d -> %d", f.GoroutineStart, f.GoroutineEnd, f.FDStart, f.FDEnd)
	}
}

// TestRunInProcess runs a small soak (no address phase: no namespace) in
// the test process, so that the race detector watches the soak's own
// code and the daemons under it. Loopback only.
func TestRunInProcess(t *testing.T) {
	dur := 4 * time.Second
	if testing.Short() {
		dur = 2 * time.Second
	}
	var f *Figures
	var err error
	for try := 0; try < 3; try++ { // a port range someone else holds: another
		f, err = Run(Config{Dur: dur, Conns: 200, Listeners: 4, PortBase: uint16(21000 + rand.N(8000)),
			Interval: 100 * time.Millisecond, Only: []string{"load", "churn", "flood", "slow", "panic"}})
		if !errors.Is(err, p2pd.ErrAddrInUse) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	f.WriteTable(&table)
	t.Logf("figures:\n%s", table.String())
	if len(f.Failures) > 0 {
		t.Errorf("failures: %v", f.Failures)
	}
}

// buildSoak builds the soak program, without the race detector, and
// returns its path.
func buildSoak(t *testing.T) string {
	t.Helper()
	root := moduleRoot(t)
	bin := filepath.Join(t.TempDir(), "soak")
	cmd := exec.Command("go", "build", "-race=false", "-o", bin, "./internal/soak/cmd/soak")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// moduleRoot finds go.mod above the working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = up
	}
}

// runSoak runs the program with args (which include -json), killing its
// process group after timeout, and returns its figures. A non-zero exit
// fails the test (after the figures are decoded, for the report).
func runSoak(t *testing.T, bin string, timeout time.Duration, args ...string) *Figures {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	t.Logf("%s %s: %v in %v; stderr:\n%s", filepath.Base(bin), strings.Join(args, " "), err, time.Since(t0).Round(time.Millisecond), tail(stderr.String(), 4000))
	if ctx.Err() != nil {
		t.Fatalf("killed after %v", timeout)
	}
	var f Figures
	if jerr := json.Unmarshal(stdout.Bytes(), &f); jerr != nil {
		t.Fatalf("exit: %v; figures: %v; stdout:\n%s", err, jerr, stdout.String())
	}
	if err != nil || len(f.Failures) > 0 {
		t.Errorf("exit: %v; failures: %v; errors: %v", err, f.Failures, f.Errors)
	}
	return &f
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
