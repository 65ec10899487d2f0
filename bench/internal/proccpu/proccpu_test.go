package proccpu

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1234 (echoserver) S 1 1234 1234 0 -1 4194560 1031 0 0 0 150 27 0 0 20 0 5 0 1000 1000000 300", 1770 * time.Millisecond, true},
		{"7 (a b) (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0", 70 * time.Millisecond, true},
		{"7 (x) R 1 7", 0, false},
		{"no paren 1 2 3", 0, false},
		{"7 (x) R 1 7 7 0 -1 0 0 0 0 0 -3 4", 0, false},
		{"7 (x) R 1 7 7 0 -1 0 0 0 0 0 99999999999999999 4", 0, false},
	} {
		got, err := ParseStat(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseStat(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestReadSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	t0, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
		_ = strings.Repeat("x", 100)
	}
	t1, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if t1 < t0 {
		t.Fatalf("CPU time went back: %v then %v", t0, t1)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add("1234 (echoserver) S 1 1234 1234 0 -1 4194560 1031 0 0 0 150 27 0 0 20 0")
	f.Add("7 (a b) (c)) R 1 7 7 0 -1 0 0 0 0 0 3 4")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseStat(s)
		if err == nil && d < 0 {
			t.Fatalf("negative CPU time %v from %q", d, s)
		}
	})
}
