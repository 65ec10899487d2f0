package systemd

import (
	"context"
	"strings"
	"testing"

	"github.com/p2pd/p2pd"
)

// TestErrorText: every error of the package says "p2pd: " once, at the
// start.
func TestErrorText(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	var errs []error
	for _, e := range []func(string) string{
		env("LISTEN_FDS", "1"),
		env("LISTEN_PID", "x", "LISTEN_FDS", "1"),
		env("LISTEN_PID", "7", "LISTEN_FDS", "1"),
		env("LISTEN_PID", "42", "LISTEN_FDS", "x"),
		env("LISTEN_PID", "42", "LISTEN_FDS", "2", "LISTEN_FDNAMES", "a"),
	} {
		_, _, err := parseListenEnv(e, 42)
		errs = append(errs, err)
	}
	_, err := watchdogInterval(env("WATCHDOG_USEC", "-1"), 42)
	errs = append(errs, err)
	t.Setenv("NOTIFY_SOCKET", "relative")
	_, err = Notify(NotifyReady)
	errs = append(errs, err)
	t.Setenv("NOTIFY_SOCKET", "/nonexistent/notify")
	_, err = Notify(NotifyReady)
	errs = append(errs, err)
	_, err = Notify("")
	errs = append(errs, err)
	_, err = Listen(context.Background(), nil)
	errs = append(errs, err)
	d := &p2pd.Daemon{}
	d.Close()
	t.Setenv("LISTEN_PID", "")
	t.Setenv("LISTEN_FDS", "")
	_, err = Listen(context.Background(), d)
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "p2pd: ") || strings.Count(msg, "p2pd:") != 1 {
			t.Errorf("case %d: %q: want one \"p2pd: \", at the start", i, msg)
		}
	}
}
