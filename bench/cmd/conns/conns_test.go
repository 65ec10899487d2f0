package main

import (
	"os"
	"testing"
	"time"
)

// TestMain lets the test binary act as the client child that run starts
// (os.Executable is the test binary here).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestRun(t *testing.T) {
	for _, impl := range []string{"p2pd", "plain"} {
		for _, mode := range []string{"idle", "msg"} {
			t.Run(impl+"/"+mode, func(t *testing.T) {
				settle := time.Duration(0)
				if mode == "msg" {
					settle = 1500 * time.Millisecond // every connection sends once
				}
				if err := run(impl, mode, 20, 1, settle); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestRunRejects(t *testing.T) {
	for _, c := range []struct {
		impl, mode string
		n          int
		settle     time.Duration
	}{
		{"nginx", "idle", 10, 0},
		{"p2pd", "busy", 10, 0},
		{"p2pd", "idle", 0, 0},
		{"p2pd", "idle", 10, -time.Second},
	} {
		if err := run(c.impl, c.mode, c.n, 1, c.settle); err == nil {
			t.Errorf("run(%q, %q, %d, %v) accepted", c.impl, c.mode, c.n, c.settle)
		}
	}
	if err := runClient("192.0.2.1:53", "idle", 1); err == nil {
		t.Error("the client accepted a non-loopback address")
	}
}
