package main

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"
)

// benchLine is one result line of `go test -bench -benchmem`:
//
//	BenchmarkUDPDispatch-2   	  123456	      9876 ns/op	      0 B/op	       0 allocs/op
//
// B/op and allocs/op are NaN when the line has no -benchmem columns.
type benchLine struct {
	name     string
	iters    int64
	nsOp     float64
	bOp      float64
	allocsOp float64
}

// parseBenchLine parses one result line. It reports false for any other
// line (headers, PASS, log output, a benchmark name alone) and for values
// that are not finite non-negative numbers.
func parseBenchLine(s string) (benchLine, bool) {
	f := strings.Fields(s)
	if len(f) < 4 || len(f)%2 != 0 || !strings.HasPrefix(f[0], "Benchmark") {
		return benchLine{}, false
	}
	b := benchLine{name: f[0], nsOp: math.NaN(), bOp: math.NaN(), allocsOp: math.NaN()}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n <= 0 {
		return benchLine{}, false
	}
	b.iters = n
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return benchLine{}, false
		}
		switch f[i+1] {
		case "ns/op":
			b.nsOp = v
		case "B/op":
			b.bOp = v
		case "allocs/op":
			b.allocsOp = v
		} // other units (MB/s, custom metrics) are ignored
	}
	if math.IsNaN(b.nsOp) {
		return benchLine{}, false
	}
	return b, true
}

// goBench is the median of every column of one benchmark over its runs.
type goBench struct {
	name                string
	runs                int
	nsOp, bOp, allocsOp float64
	zeroAllocTarget     bool
}

// readGoBench reads `go test -bench` output and returns one goBench per
// benchmark name, in the order of their first line.
func readGoBench(r io.Reader) ([]goBench, error) {
	var names []string
	runs := map[string][]benchLine{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		b, ok := parseBenchLine(sc.Text())
		if !ok {
			continue
		}
		if _, seen := runs[b.name]; !seen {
			names = append(names, b.name)
		}
		runs[b.name] = append(runs[b.name], b)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := make([]goBench, 0, len(names))
	for _, n := range names {
		var ns, bs, as []float64
		for _, b := range runs[n] {
			ns = append(ns, b.nsOp)
			if !math.IsNaN(b.bOp) {
				bs = append(bs, b.bOp)
			}
			if !math.IsNaN(b.allocsOp) {
				as = append(as, b.allocsOp)
			}
		}
		out = append(out, goBench{
			name: n, runs: len(runs[n]),
			nsOp: median(ns), bOp: median(bs), allocsOp: median(as),
			zeroAllocTarget: zeroAllocTarget(n),
		})
	}
	return out, nil
}

// zeroAllocTarget reports whether benchmark n measures p2pd's receive and
// dispatch path (and, in TCPEcho, the Send of the reply), which must not
// allocate (the stdlib twins are baselines).
func zeroAllocTarget(n string) bool {
	for _, p := range []string{"BenchmarkUDPDispatch", "BenchmarkUDPBurst", "BenchmarkTCPDispatch", "BenchmarkTCPEcho"} {
		if strings.HasPrefix(n, p) {
			return !strings.Contains(n, "/stdlib")
		}
	}
	return false
}
