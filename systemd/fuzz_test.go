package systemd

import (
	"testing"
)

// Fuzzers of the environment parsers.

func FuzzParseListenEnv(f *testing.F) {
	f.Add("42", "2", "a:b", 42)
	f.Add("42", "1", "", 42)
	f.Add("x", "-1", "::", 1)
	f.Fuzz(func(t *testing.T, pid, fds, names string, me int) {
		env := map[string]string{"LISTEN_PID": pid, "LISTEN_FDS": fds, "LISTEN_FDNAMES": names}
		n, ns, err := parseListenEnv(func(k string) string { return env[k] }, me)
		if err == nil && (n < 0 || len(ns) != n) {
			t.Fatalf("%d sockets, %d names, no error", n, len(ns))
		}
	})
}

func FuzzWatchdogInterval(f *testing.F) {
	f.Add("30000000", "7", 7)
	f.Add("-1", "", 1)
	f.Fuzz(func(t *testing.T, usec, pid string, me int) {
		env := map[string]string{"WATCHDOG_USEC": usec, "WATCHDOG_PID": pid}
		d, err := watchdogInterval(func(k string) string { return env[k] }, me)
		if err == nil && d < 0 {
			t.Fatalf("negative interval %v", d)
		}
	})
}
