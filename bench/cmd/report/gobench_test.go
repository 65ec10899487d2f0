package main

import (
	"math"
	"strings"
	"testing"
)

func TestParseBenchLine(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in   string
		ok   bool
		want benchLine
	}{
		{"BenchmarkUDPDispatch-2   \t  123456\t      9876 ns/op\t      0 B/op\t       0 allocs/op", true,
			benchLine{"BenchmarkUDPDispatch-2", 123456, 9876, 0, 0}},
		{"BenchmarkTCPDispatch/raw-2 1000 12.5 ns/op 64 B/op 1 allocs/op", true,
			benchLine{"BenchmarkTCPDispatch/raw-2", 1000, 12.5, 64, 1}},
		{"BenchmarkX 10 100 ns/op 5.2 MB/s", true, benchLine{"BenchmarkX", 10, 100, nan, nan}},
		{"BenchmarkX-2", false, benchLine{}},
		{"BenchmarkX-2 \t--- FAIL", false, benchLine{}},
		{"goos: linux", false, benchLine{}},
		{"PASS", false, benchLine{}},
		{"ok  \tgithub.com/p2pd/p2pd\t3.1s", false, benchLine{}},
		{"BenchmarkX 0 100 ns/op", false, benchLine{}},
		{"BenchmarkX 10 NaN ns/op", false, benchLine{}},
		{"BenchmarkX 10 -1 ns/op", false, benchLine{}},
		{"BenchmarkX 10 100 B/op", false, benchLine{}}, // no ns/op
		{"BenchmarkX 10 100 ns/op 3", false, benchLine{}},
	} {
		got, ok := parseBenchLine(tc.in)
		if ok != tc.ok {
			t.Errorf("parseBenchLine(%q) ok = %v, want %v", tc.in, ok, tc.ok)
			continue
		}
		if ok && !sameLine(got, tc.want) {
			t.Errorf("parseBenchLine(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func sameLine(a, b benchLine) bool {
	eq := func(x, y float64) bool { return x == y || math.IsNaN(x) && math.IsNaN(y) }
	return a.name == b.name && a.iters == b.iters && eq(a.nsOp, b.nsOp) && eq(a.bOp, b.bOp) && eq(a.allocsOp, b.allocsOp)
}

func TestReadGoBench(t *testing.T) {
	in := `goos: linux
BenchmarkUDPDispatch-2   	  100	      300 ns/op	      0 B/op	       0 allocs/op
BenchmarkUDPDispatch-2   	  100	      100 ns/op	      0 B/op	       0 allocs/op
BenchmarkUDPDispatch-2   	  100	      200 ns/op	      0 B/op	       0 allocs/op
BenchmarkTCPDispatch/raw-2 	  100	      500 ns/op	     16 B/op	       1 allocs/op
BenchmarkOther-2 	  100	      5 ns/op
PASS
`
	bs, err := readGoBench(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 {
		t.Fatalf("got %d benchmarks, want 3: %+v", len(bs), bs)
	}
	if b := bs[0]; b.name != "BenchmarkUDPDispatch-2" || b.runs != 3 || b.nsOp != 200 || b.allocsOp != 0 || !b.zeroAllocTarget {
		t.Errorf("first = %+v", b)
	}
	if b := bs[2]; b.zeroAllocTarget || !math.IsNaN(b.allocsOp) {
		t.Errorf("third = %+v", b)
	}
	out := renderGoBench(bs)
	for _, s := range []string{"| BenchmarkUDPDispatch-2 | 200 | 0 | 0 | 3 | ✓ allocs/op = 0 |", "| BenchmarkTCPDispatch/raw-2 | 500 | 16 | 1 | 1 | ✗ allocs/op = 0 |", "| BenchmarkOther-2 | 5 | — | — | 1 |  |"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
}

// FuzzParseBenchLine checks that the parser never panics and only accepts
// lines whose values it can stand behind.
func FuzzParseBenchLine(f *testing.F) {
	for _, s := range []string{
		"BenchmarkUDPDispatch-2   \t  123456\t      9876 ns/op\t      0 B/op\t       0 allocs/op",
		"BenchmarkX 10 100 ns/op 5.2 MB/s",
		"BenchmarkX 10 1e400 ns/op",
		"BenchmarkX 10 0x1p-2 ns/op",
		"PASS",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, ok := parseBenchLine(s)
		if !ok {
			return
		}
		if !strings.HasPrefix(b.name, "Benchmark") || b.iters <= 0 {
			t.Fatalf("accepted %q as %+v", s, b)
		}
		if math.IsNaN(b.nsOp) || math.IsInf(b.nsOp, 0) || b.nsOp < 0 {
			t.Fatalf("accepted %q with ns/op %v", s, b.nsOp)
		}
		for _, v := range []float64{b.bOp, b.allocsOp} {
			if math.IsInf(v, 0) || v < 0 {
				t.Fatalf("accepted %q with %v", s, v)
			}
		}
		if !strings.Contains(s, b.name) {
			t.Fatalf("name %q not in %q", b.name, s)
		}
	})
}

func TestZeroAllocTarget(t *testing.T) {
	for n, want := range map[string]bool{
		"BenchmarkUDPDispatch/p2pd-2":   true,
		"BenchmarkUDPDispatch/stdlib-2": false,
		"BenchmarkUDPBurst/p2pd-2":      true,
		"BenchmarkTCPDispatch/raw-2":    true,
		"BenchmarkTCPDispatch/stdlib-2": false,
		"BenchmarkTCPEcho/raw-2":        true,
		"BenchmarkTCPEcho/stdlib-2":     false,
		"BenchmarkOther-2":              false,
	} {
		if got := zeroAllocTarget(n); got != want {
			t.Errorf("zeroAllocTarget(%q) = %v, want %v", n, got, want)
		}
	}
}
