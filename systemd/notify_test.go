//go:build unix

package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
)

func TestNotifyUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(NotifyReady); sent || err != nil {
		t.Fatalf("Notify = %v, %v; want false, nil", sent, err)
	}
}

// notifyRecv listens on a unixgram socket named name and returns what
// arrives next.
func notifyRecv(t *testing.T, name string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("nothing received: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotifyPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	recv := notifyRecv(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	for _, state := range []string{NotifyReady, "STATUS=serving 3 listeners\nWATCHDOG=1", NotifyStopping} {
		sent, err := Notify(state)
		if !sent || err != nil {
			t.Fatalf("Notify(%q) = %v, %v", state, sent, err)
		}
		if got := recv(); got != state {
			t.Fatalf("received %q, want %q", got, state)
		}
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := fmt.Sprintf("@p2pd-notify-test-%d-%d", time.Now().UnixNano(), runtime.NumGoroutine())
	t.Setenv("NOTIFY_SOCKET", name)
	if runtime.GOOS != "linux" && runtime.GOOS != "android" {
		if sent, err := Notify(NotifyReady); sent || !errors.Is(err, ErrNotifySocket) {
			t.Fatalf("Notify = %v, %v; want ErrNotifySocket", sent, err)
		}
		return
	}
	recv := notifyRecv(t, name)
	if sent, err := Notify(NotifyReady); !sent || err != nil {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if got := recv(); got != NotifyReady {
		t.Fatalf("received %q", got)
	}
}

func TestNotifyErrors(t *testing.T) {
	for _, c := range []struct {
		sock, state string
		is          error
	}{
		{"relative/notify", NotifyReady, ErrNotifySocket},
		{"vsock:2:1234", NotifyReady, ErrNotifySocket},
		{filepath.Join(t.TempDir(), "nobody-listens"), NotifyReady, nil},
		{"/run/whatever", "", p2pd.ErrInvalid},
	} {
		t.Setenv("NOTIFY_SOCKET", c.sock)
		sent, err := Notify(c.state)
		var ne *NotifyError
		if sent || !errors.As(err, &ne) || ne.Socket != c.sock || (c.is != nil && !errors.Is(err, c.is)) {
			t.Errorf("%q %q: Notify = %v, %v", c.sock, c.state, sent, err)
		}
	}
}

func TestNotifyWatchdogInterval(t *testing.T) {
	const pid = 77
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		bad       bool
	}{
		{"", "", 0, false},
		{"2000000", "", 2 * time.Second, false},
		{"2000000", "77", 2 * time.Second, false},
		{"2000000", "78", 0, false}, // another process's watchdog
		{"0", "", 0, true},
		{"-5", "", 0, true},
		{"abc", "", 0, true},
		{"99999999999999999999", "", 0, true},
		{"1000", "x", 0, true},
	} {
		env := map[string]string{"WATCHDOG_USEC": c.usec, "WATCHDOG_PID": c.pid}
		got, err := watchdogInterval(func(k string) string { return env[k] }, pid)
		if got != c.want || (err != nil) != c.bad || (c.bad && !errors.Is(err, ErrListenEnv)) {
			t.Errorf("USEC=%q PID=%q: %v, %v", c.usec, c.pid, got, err)
		}
	}
	t.Setenv("WATCHDOG_USEC", "500000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if d, err := WatchdogInterval(); d != 500*time.Millisecond || err != nil {
		t.Fatalf("WatchdogInterval = %v, %v", d, err)
	}
}
