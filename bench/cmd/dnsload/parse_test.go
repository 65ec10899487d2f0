package main

import (
	"math"
	"os"
	"strings"
	"testing"
)

func TestParsePerfFiles(t *testing.T) {
	for _, tc := range []struct {
		file             string
		sent, done, lost int64
		qps, avg, lo, hi float64
		stddev           float64
		reconnections    int64
	}{
		{"testdata/udp.txt", 171342, 171342, 0, 85651.985259, 0.000852, 0.000015, 0.042628, 0.000937, -1},
		// -m tcp: the connection latency block after the first must not count.
		{"testdata/tcp.txt", 256966, 256966, 0, 128463.987330, 0.000551, 0.000010, 0.004519, 0.000360, 0},
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		st, err := parsePerf(string(b))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		want := perfStats{tc.sent, tc.done, tc.lost, tc.qps, tc.avg, tc.lo, tc.hi, tc.stddev, tc.reconnections}
		if st != want {
			t.Errorf("%s: got %+v, want %+v", tc.file, st, want)
		}
	}
}

const minimal = `Statistics:
  Queries sent:         10
  Queries completed:    9 (90.00%)
  Queries lost:         1 (10.00%)
  Queries per second:   4.5
  Average Latency (s):  0.001 (min 0.0005, max 0.002)
`

func TestParsePerfCases(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"minimal", minimal, true},
		{"empty", "", false},
		{"no statistics header", strings.Replace(minimal, "Statistics:\n", "", 1), false},
		{"no qps", strings.Replace(minimal, "  Queries per second:   4.5\n", "", 1), false},
		{"no latency", strings.Replace(minimal, "  Average Latency (s):  0.001 (min 0.0005, max 0.002)\n", "", 1), false},
		{"no sent", strings.Replace(minimal, "  Queries sent:         10\n", "", 1), false},
		{"negative qps", strings.Replace(minimal, "4.5", "-4.5", 1), false},
		{"NaN latency", strings.Replace(minimal, "0.001 (", "NaN (", 1), false},
		{"garbage count", strings.Replace(minimal, "sent:         10", "sent:         ten", 1), false},
		{"completed > sent", strings.Replace(minimal, "completed:    9", "completed:    11", 1), false},
		{"bad min/max", strings.Replace(minimal, "(min 0.0005, max 0.002)", "(0.0005 0.002)", 1), false},
		{"error text only", "Error: could not open socket\n", false},
	} {
		st, err := parsePerf(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.name, err, tc.ok)
			continue
		}
		if tc.ok && (st.sent != 10 || st.completed != 9 || st.lost != 1 || st.qps != 4.5 || st.avgLatency != 0.001 || st.maxLatency != 0.002 || !math.IsNaN(st.stddev)) {
			t.Errorf("%s: got %+v", tc.name, st)
		}
	}
}

func TestQueries(t *testing.T) {
	q := string(queries(3))
	if q != "q0.bench.p2pd.test. A\nq1.bench.p2pd.test. A\nq2.bench.p2pd.test. A\n" {
		t.Errorf("queries(3) = %q", q)
	}
}

// FuzzParsePerf checks that the parser never panics and that what it
// accepts is consistent.
func FuzzParsePerf(f *testing.F) {
	f.Add(minimal)
	for _, file := range []string{"testdata/udp.txt", "testdata/tcp.txt"} {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := parsePerf(s)
		if err != nil {
			return
		}
		if st.sent < 0 || st.completed < 0 || st.lost < 0 || st.completed > st.sent || st.lost > st.sent {
			t.Fatalf("accepted inconsistent counts %+v", st)
		}
		for _, v := range []float64{st.qps, st.avgLatency} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Fatalf("accepted value %v: %+v", v, st)
			}
		}
	})
}
