package rtnl

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMonitor: in a fresh network namespace (so nothing else changes
// addresses meanwhile), adding an address is notified, and Close ends a
// waiting Next.
func TestMonitor(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (CI=true)")
		}
		t.Skip("needs root: run as root (sudo go test ./internal/rtnl) to test the monitor in a namespace")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal("needs iproute2:", err)
	}
	done := make(chan error, 1)
	go func() {
		// A thread of its own in a new namespace, never reused.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		m, err := OpenMonitor()
		if err != nil {
			done <- err
			return
		}
		defer m.Close()
		// ip runs in the process's namespace unless told: join ours.
		tid := unix.Gettid()
		cmd := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(os.Getpid())+"/task/"+strconv.Itoa(tid)+"/ns/net", ip, "link", "set", "lo", "up")
		if out, err := cmd.CombinedOutput(); err != nil {
			done <- err
			t.Logf("%s", out)
			return
		}
		n, err := m.Next()
		if err == nil && n == 0 {
			err = os.ErrInvalid
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
	}

	// Close ends a waiting Next (in a namespace of its own again: the
	// process's may see changes from other tests).
	ended := make(chan error, 1)
	opened := make(chan *Monitor, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			opened <- nil
			ended <- err
			return
		}
		m, err := OpenMonitor()
		opened <- m
		if err != nil {
			ended <- err
			return
		}
		_, err = m.Next()
		if err == nil {
			err = errNoError
		}
		ended <- err
	}()
	m := <-opened
	if m == nil {
		t.Fatal(<-ended)
	}
	time.Sleep(20 * time.Millisecond)
	m.Close()
	select {
	case err := <-ended:
		if err == errNoError {
			t.Fatal("Next after Close returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end Next")
	}
}

var errNoError = errors.New("no error")
