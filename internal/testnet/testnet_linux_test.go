package testnet

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadNS is the inode of the calling thread's network namespace.
func threadNS(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestDoThread(t *testing.T) {
	n := New(t)
	a := n.AddHost("a")
	var want unix.Stat_t
	if err := unix.Stat(filepath.Join(nsDir, a.NS), &want); err != nil {
		t.Fatal(err)
	}

	// Keep one thread so that "after" is measured where Do ran.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNS(t)
	var inside uint64
	a.Do(t, func() { inside = threadNS(t) })
	if inside != want.Ino || inside == before {
		t.Errorf("inside Do the thread is in namespace %d, want %d (root %d)", inside, want.Ino, before)
	}
	if after := threadNS(t); after != before {
		t.Errorf("after Do the thread is in namespace %d, want %d", after, before)
	}

	// A panic in fn still restores the thread.
	func() {
		defer func() { recover() }()
		a.Do(t, func() { panic("boom") })
	}()
	if after := threadNS(t); after != before {
		t.Errorf("after a panic in Do the thread is in namespace %d, want %d", after, before)
	}

	// Goroutines started inside Do run elsewhere, as documented.
	got := make(chan uint64, 1)
	a.Do(t, func() {
		go func() {
			var st unix.Stat_t
			unix.Stat("/proc/thread-self/ns/net", &st)
			got <- st.Ino
		}()
		if ino := <-got; ino == want.Ino {
			t.Errorf("a goroutine started inside Do ran in the namespace")
		}
	})
}

func TestSweep(t *testing.T) {
	Require(t)
	// A pid that was just freed stands for a test process that died.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	stale := nsName(pidNS(), dead, 1, "stale")
	alive := nsName(pidNS(), os.Getppid(), 1, "alive") // our parent still runs
	for _, ns := range []string{stale, alive} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	New(t)
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte(stale)) {
		t.Errorf("stale namespace %s of dead pid %d was not swept", stale, dead)
	}
	if !bytes.Contains(out, []byte(alive)) {
		t.Errorf("namespace %s of a live pid was swept", alive)
	}
}

func TestWaitDADWithoutCarrier(t *testing.T) {
	n := New(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	a.AddDummy(IfConfig{Name: "wd0", Down: true})
	if err := a.waitDAD("wd0", true); err != nil {
		t.Errorf("nothing tentative: %v", err)
	}
	// Up, but the peer is down: tentative forever, so fail at once.
	n.Link(a, IfConfig{Name: "wd1"}, b, IfConfig{Name: "wd2", Down: true})
	a.IP(t, "addr", "add", "fd00:7::1/64", "dev", "wd1")
	start := time.Now()
	err := a.waitDAD("wd1", true)
	if err == nil || !strings.Contains(err.Error(), "no carrier") || time.Since(start) > time.Second {
		t.Errorf("waitDAD on a link without carrier = %v after %v", err, time.Since(start))
	}
}
