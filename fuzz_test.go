package p2pd

import (
	"strconv"
	"testing"

	"github.com/pion/stun/v3"
)

// Fuzzers of the parsers that issue-by-issue tests did not cover yet; the
// others sit beside their code (FuzzParsePorts, FuzzInterfaceJSON,
// FuzzFrameLine, FuzzFrameLength, internal/rtnl, internal/mmsg).

func FuzzSplitServer(f *testing.F) {
	for _, s := range []string{"192.0.2.1:3478", "[2001:db8::1]:3478", "stun.example.net", "stun.example.net:0", "[::1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := splitServer(s)
		if err == nil && (host == "" || port == 0) {
			t.Fatalf("splitServer(%q) = %q, %d without an error", s, host, port)
		}
	})
}

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

// FuzzSTUNResponse: whatever a server sends back, decoding it and reading
// its mapped address does not panic.
func FuzzSTUNResponse(f *testing.F) {
	m := stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: []byte{192, 0, 2, 1}, Port: 4242}, stun.Fingerprint)
	f.Add(m.Raw)
	f.Add([]byte{})
	f.Add([]byte(strconv.Itoa(12345)))
	f.Fuzz(func(t *testing.T, b []byte) {
		var msg stun.Message
		if err := stun.Decode(append([]byte(nil), b...), &msg); err != nil {
			return
		}
		mappedAddr(&msg)
	})
}
