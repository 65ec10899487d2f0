package main

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, 5, 1, 100, 5}, 5},
	} {
		in := append([]float64(nil), tc.in...)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("median modified its input: %v", tc.in)
			}
		}
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}

func TestReadResults(t *testing.T) {
	in := `building...
{"bench":"udp-echo","impl":"p2pd","round":1,"metrics":{"replies_per_s":100,"loss_pct":0}}

{"bench":"udp-echo","impl":"stdlib","round":1,"metrics":{"replies_per_s":50}}
{"bench":"udp-echo","impl":
{"metrics":{"x":1}}
`
	rs, bad := readResults(strings.NewReader(in))
	if len(rs) != 2 || len(bad) != 2 {
		t.Fatalf("got %d results and %d bad lines (%q), want 2 and 2", len(rs), len(bad), bad)
	}
	if rs[0].Impl != "p2pd" || rs[0].Round != 1 || rs[0].Metrics["replies_per_s"] != 100 {
		t.Errorf("first result = %+v", rs[0])
	}
}

func res(bench, impl string, round int, kv ...any) result {
	m := map[string]float64{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1].(float64)
	}
	return result{Bench: bench, Impl: impl, Round: round, Metrics: m}
}

func TestCompare(t *testing.T) {
	rs := []result{
		// udp-echo: paired by round, p2pd is 1, 1.5 and 9 × stdlib (median
		// 1.5: ✓) and 0.5, 1.07 and 5.4 × batch (median 1.07: ✗).
		res("udp-echo", "p2pd", 1, "replies_per_s", 100.0),
		res("udp-echo", "p2pd", 2, "replies_per_s", 150.0),
		res("udp-echo", "p2pd", 3, "replies_per_s", 900.0),
		res("udp-echo", "stdlib", 1, "replies_per_s", 100.0),
		res("udp-echo", "stdlib", 2, "replies_per_s", 100.0),
		res("udp-echo", "stdlib", 3, "replies_per_s", 100.0),
		res("udp-echo", "batch", 1, "replies_per_s", 200.0),
		res("udp-echo", "batch", 2, "replies_per_s", 140.0),
		res("udp-echo", "batch", 3, "replies_per_s", 166.0),
		// tcp-rr p99: lower is better, no margin: 1.04 misses.
		res("tcp-rr", "p2pd", 1, "p99_us", 104.0),
		res("tcp-rr", "stdlib", 1, "p99_us", 100.0),
		// scale: 4000 has targets, 100 has none; errors 0/0 has no ratio.
		res("scale-tcp-4000", "p2pd", 1, "open_ms", 30.0, "bytes_per_listener", 500.0),
		res("scale-tcp-4000", "plain", 1, "open_ms", 10.0, "bytes_per_listener", 400.0),
		res("scale-tcp-100", "p2pd", 1, "open_ms", 3.0, "errors", 0.0),
		res("scale-tcp-100", "plain", 1, "open_ms", 1.0, "errors", 0.0),
		// a bench without p2pd still shows its baseline.
		res("tcp-stream", "stdlib", 1, "mb_per_s", 10.0),
	}
	type want struct {
		bench, metric, baseline string
		ratio                   float64 // NaN: none
		mark                    string  // "" when no target
	}
	wants := []want{
		{"tcp-rr", "p99_us", "stdlib", 1.04, "✗"},
		{"tcp-stream", "mb_per_s", "stdlib", math.NaN(), "?"},
		{"udp-echo", "replies_per_s", "stdlib", 1.5, "✓"},
		{"udp-echo", "replies_per_s", "batch", 150.0 / 140, "✗"},
		{"scale-tcp-100", "open_ms", "plain", 3, ""},
		{"scale-tcp-100", "errors", "plain", math.NaN(), ""},
		{"scale-tcp-4000", "open_ms", "plain", 3, "✗"},
		{"scale-tcp-4000", "bytes_per_listener", "plain", 1.25, "✗"},
	}
	rows := compare(rs)
	if len(rows) != len(wants) {
		for _, r := range rows {
			t.Logf("%+v", r)
		}
		t.Fatalf("got %d rows, want %d", len(rows), len(wants))
	}
	for i, w := range wants {
		r := rows[i]
		if r.bench != w.bench || r.metric != w.metric || r.baseline != w.baseline {
			t.Errorf("row %d is %s/%s/%s, want %s/%s/%s", i, r.bench, r.metric, r.baseline, w.bench, w.metric, w.baseline)
			continue
		}
		if math.IsNaN(w.ratio) != math.IsNaN(r.ratio) || !math.IsNaN(w.ratio) && math.Abs(r.ratio-w.ratio) > 1e-9 {
			t.Errorf("row %d (%s %s vs %s): ratio %v, want %v", i, w.bench, w.metric, w.baseline, r.ratio, w.ratio)
		}
		mark := ""
		if r.target != nil {
			mark = r.target.check(r.target.measure(r))
		}
		if mark != w.mark {
			t.Errorf("row %d (%s %s vs %s): mark %q, want %q", i, w.bench, w.metric, w.baseline, mark, w.mark)
		}
	}
	out := renderRows(rows)
	for _, s := range []string{"| udp-echo | replies_per_s ↑ | 150 | stdlib | 100 | 1.50 | 1.00–9.00 | 3/3 | ✓ ≥ 1.40 |", "p99_us ↓", "p99 p2pd ≤ stdlib"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
}

func TestTargetCheck(t *testing.T) {
	for _, tc := range []struct {
		bench, metric, baseline string
		ratio                   float64
		want                    string
	}{
		{"udp-echo", "replies_per_s", "stdlib", 1.4, "✓"},
		{"udp-echo", "replies_per_s", "stdlib", 1.39, "✗"},
		{"udp-echo", "replies_per_s", "batch", 1.1, "✓"},
		{"udp-echo", "replies_per_s", "batch", 1.09, "✗"},
		{"udp1-echo", "replies_per_s", "batch", 1.2, "✓"},
		{"udp-echo", "cpu_us_per_reply", "batch", 0.8, "✓"},
		{"udp1-echo", "cpu_us_per_reply", "batch", 0.81, "✗"},
		{"tcp-stream", "mb_per_s", "stdlib", 1.0, "✓"},
		{"tcp-stream", "mb_per_s", "stdlib", 0.99, "✗"},
		{"tcp-rr", "replies_per_s", "stdlib", 0.99, "✗"},
		{"tcp-rr", "p99_us", "stdlib", 1.0, "✓"},
		{"tcp-rr", "p99_us", "stdlib", 1.01, "✗"},
		{"scale-udp-4000", "open_ms", "plain", 1.1, "✓"},
		{"scale-udp-4000", "open_ms", "plain", 1.11, "✗"},
		{"scale-tcp-4000", "close_ms", "plain", 1.2, "✓"},
		{"scale-tcp-4000", "close_ms", "plain", 1.21, "✗"},
		{"scale-udp-4000", "bytes_per_listener", "plain", 1.11, "✗"},
		{"scale-udp-4000", "bytes_per_listener", "plain", math.NaN(), "?"},
		{"udpwork-echo", "replies_per_s", "p2pd-fanout", 0.8, "✓"},
		{"udpwork-echo", "replies_per_s", "p2pd-fanout", 0.81, "✗"},
		{"udpwork-echo", "server_cpu_pct", "p2pd-fanout", 120, "✓"},
		{"udpwork-echo", "server_cpu_pct", "p2pd-fanout", 119, "✗"},
	} {
		tg := findTarget(tc.bench, tc.metric, tc.baseline)
		if tg == nil {
			t.Errorf("no target for %s %s %s", tc.bench, tc.metric, tc.baseline)
			continue
		}
		if got := tg.check(tc.ratio); got != tc.want {
			t.Errorf("%s %s %s at %v: %s, want %s", tc.bench, tc.metric, tc.baseline, tc.ratio, got, tc.want)
		}
	}
	for _, none := range [][3]string{{"tcp-rr", "p50_us", "gnet"}, {"scale-tcp-1000", "open_ms", "plain"}, {"udp-echo", "loss_pct", "stdlib"},
		{"udp-echo", "replies_per_s", "gnet"}, {"tcp-rr", "replies_per_s", "gnet"}, {"dns-udp", "qps", "miekg"}, {"conns-idle-1000", "heap_stack_per_conn", "plain"},
		{"udp-echo", "replies_per_s", "raw"}, {"udp1-echo", "cpu_us_per_reply", "raw"}, {"udp-echo", "replies_per_s", "p2pd-fanout"},
		// the udp-echo targets against batch do not reach udpwork-echo
		{"udpwork-echo", "replies_per_s", "batch"}, {"udpwork-echo", "cpu_us_per_reply", "batch"}, {"udpwork-echo", "server_cpu_pct", "batch"}} {
		if tg := findTarget(none[0], none[1], none[2]); tg != nil {
			t.Errorf("unexpected target for %v: %v", none, tg)
		}
	}
}

func TestFmtNum(t *testing.T) {
	for v, want := range map[float64]string{
		123456.7: "123457", 42.25: "42.2", 3.14159: "3.14", 0.01234: "0.0123", 0: "0", 7: "7", math.NaN(): "—",
	} {
		if got := fmtNum(v); got != want {
			t.Errorf("fmtNum(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestAbsoluteTarget(t *testing.T) {
	tg := findTarget("conns-idle-19000", "heap_stack_per_conn", "plain")
	if tg == nil || tg.on != onSubject {
		t.Fatalf("conns-idle-19000 target = %+v, want an absolute bound", tg)
	}
	for _, tc := range []struct {
		p2pd, plain float64
		want        string
	}{
		{3072, 100, "✓"}, // the ratio is 30: only p2pd's value counts
		{3073, 1e6, "✗"},
		{math.NaN(), 1, "?"},
	} {
		r := row{p2pd: summary{value: tc.p2pd, rounds: 1}, base: summary{value: tc.plain, rounds: 1}, ratio: ratio(tc.p2pd, tc.plain)}
		if got := tg.check(tg.measure(r)); got != tc.want {
			t.Errorf("p2pd %v plain %v: %s, want %s", tc.p2pd, tc.plain, got, tc.want)
		}
	}
	if s := tg.String(); !strings.Contains(s, "p2pd ≤ 3072") {
		t.Errorf("target prints as %q", s)
	}
}

// TestBaselineTarget: a bound on the baseline's value (udpwork-echo's
// server_cpu_pct of p2pd-fanout) ignores p2pd's value and the ratio, and
// names the baseline.
func TestBaselineTarget(t *testing.T) {
	tg := findTarget("udpwork-echo", "server_cpu_pct", "p2pd-fanout")
	if tg == nil || tg.on != onBaseline {
		t.Fatalf("udpwork-echo server_cpu_pct target = %+v, want a bound on the baseline's value", tg)
	}
	for _, tc := range []struct {
		p2pd, fanout float64
		want         string
	}{
		{95, 160, "✓"},
		{200, 120, "✓"}, // the ratio (1.67) does not count
		{50, 110, "✗"},  // nor does it here (0.45)
		{95, math.NaN(), "?"},
		{math.NaN(), 160, "✓"},
	} {
		r := row{p2pd: summary{value: tc.p2pd, rounds: 1}, base: summary{value: tc.fanout, rounds: 1}, ratio: ratio(tc.p2pd, tc.fanout)}
		if got := tg.check(tg.measure(r)); got != tc.want {
			t.Errorf("p2pd %v fan-out %v: %s, want %s", tc.p2pd, tc.fanout, got, tc.want)
		}
	}
	out := renderRows(compare([]result{
		res("udpwork-echo", "p2pd", 1, "replies_per_s", 36000.0, "server_cpu_pct", 93.0),
		res("udpwork-echo", "p2pd-fanout", 1, "replies_per_s", 66000.0, "server_cpu_pct", 155.0),
		res("udpwork-echo", "batch", 1, "replies_per_s", 37000.0, "server_cpu_pct", 98.0),
	}))
	for _, s := range []string{
		"| udpwork-echo | replies_per_s ↑ | 36000 | p2pd-fanout | 66000 | 0.55 | — | 1/1 | ✓ ≤ 0.80 (fan-out ≥ 1.25 × one socket) |",
		"| udpwork-echo | server_cpu_pct · | 93 | p2pd-fanout | 155 | 0.60 | — | 1/1 | ✓ p2pd-fanout ≥ 120 (fan-out serves on more than one core) |",
		"| udpwork-echo | replies_per_s ↑ | 36000 | batch | 37000 | 0.97 | — | 1/1 |  |",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
}

func TestGrowthName(t *testing.T) {
	for _, tc := range []struct {
		in     string
		family string
		n      int
		ok     bool
	}{
		{"scale-tcp-4000", "scale-tcp", 4000, true},
		{"conns-idle-19000", "conns-idle", 19000, true},
		{"conns-msg-100", "conns-msg", 100, true},
		{"scale-tcp", "", 0, false},
		{"scale-4000", "", 0, false},
		{"tcp-rr", "", 0, false},
		{"scale-tcp-x", "", 0, false},
		{"conns-idle--1", "", 0, false},
	} {
		f, n, ok := growthName(tc.in)
		if ok != tc.ok || ok && (f != tc.family || n != tc.n) {
			t.Errorf("growthName(%q) = %q, %d, %v; want %q, %d, %v", tc.in, f, n, ok, tc.family, tc.n, tc.ok)
		}
	}
}

func TestGrowthTables(t *testing.T) {
	rs := []result{
		res("scale-tcp-16000", "p2pd", 1, "open_ms", 200.0, "bytes_per_listener", 900.0),
		res("scale-tcp-16000", "plain", 1, "open_ms", 100.0, "bytes_per_listener", 1000.0),
		res("scale-tcp-100", "p2pd", 1, "open_ms", 2.0),
		res("scale-tcp-4000", "p2pd", 1, "open_ms", 44.0),
		res("scale-tcp-4000", "plain", 1, "open_ms", 40.0),
		res("conns-idle-1000", "p2pd", 1, "heap_stack_per_conn", 2000.0),
		res("conns-idle-1000", "plain", 1, "heap_stack_per_conn", 8000.0),
		res("udp-echo", "p2pd", 1, "replies_per_s", 1.0),
	}
	out := renderGrowth(rs)
	for _, s := range []string{
		"### conns-idle", "| 1000 | 2000 | 8000 | 0.25 | — | — | — |",
		"### scale-tcp", "| 100 | 2.00 | — | — |", "| 16000 | 200 | 100 | 2.00 |",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("growth tables lack %q:\n%s", s, out)
		}
	}
	if i, j := strings.Index(out, "| 4000 |"), strings.Index(out, "| 16000 |"); i < 0 || j < i {
		t.Errorf("sizes not in numeric order:\n%s", out)
	}
	if strings.Contains(out, "udp-echo") {
		t.Errorf("an echo bench in the growth tables:\n%s", out)
	}
	main := mainRows(compare(rs))
	for _, r := range main {
		if r.bench == "scale-tcp-100" || r.bench == "conns-idle-1000" {
			t.Errorf("main table keeps growth row without target: %+v", r)
		}
	}
	if !slices.ContainsFunc(main, func(r row) bool { return r.bench == "scale-tcp-4000" && r.metric == "open_ms" }) {
		t.Errorf("main table lost the scale-tcp-4000 target row")
	}
}

func TestMissingTargets(t *testing.T) {
	rows := withMissingTargets(compare([]result{res("tcp-rr", "p2pd", 1, "p99_us", 1.0), res("tcp-rr", "stdlib", 1, "p99_us", 2.0)}))
	if len(rows) != len(targets) {
		t.Fatalf("%d rows, want one per target (%d)", len(rows), len(targets))
	}
	out := renderRows(rows)
	for _, s := range []string{
		"| tcp-rr | p99_us ↓ | 1 | stdlib | 2 | 0.50 | — | 1/1 | ✓",
		"| conns-idle-19000 | heap_stack_per_conn ↓ | — | plain | — | — | — | 0/0 | ? p2pd ≤ 3072",
		"| scale-*-4000 | close_ms ↓ | — | plain | — | — | — | 0/0 | ? ≤ 1.20 |",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
}

func TestRatioAtBound(t *testing.T) {
	out := renderRows(compare([]result{
		res("scale-udp-4000", "p2pd", 1, "close_ms", 36.4),
		res("scale-udp-4000", "plain", 1, "close_ms", 30.3),
	}))
	if !strings.Contains(out, "| 1.201 | — | 1/1 | ✗ ≤ 1.20 |") {
		t.Errorf("a ratio just over the bound does not show why it misses:\n%s", out)
	}
}

// TestPaired: the ratio is the median of run-by-run ratios within a round,
// not the ratio of the medians, which the machine's speed between rounds
// moves; the range shows the lowest and highest of them.
func TestPaired(t *testing.T) {
	rs := []result{
		// The machine is fast in round 2 for p2pd's run and in round 3 for
		// stdlib's: medians 200/100 = 2, but p2pd leads in one round only.
		res("tcp-rr", "p2pd", 1, "replies_per_s", 100.0),
		res("tcp-rr", "stdlib", 1, "replies_per_s", 90.0),
		res("tcp-rr", "stdlib", 2, "replies_per_s", 100.0),
		res("tcp-rr", "p2pd", 2, "replies_per_s", 300.0),
		res("tcp-rr", "p2pd", 3, "replies_per_s", 200.0),
		res("tcp-rr", "stdlib", 3, "replies_per_s", 400.0),
		// Two runs per round pair in the order they ran: 10/20 and 30/15
		// (median 1.25), not the medians' 20/17.5.
		res("scale-udp-4000", "p2pd", 1, "close_ms", 10.0),
		res("scale-udp-4000", "plain", 1, "close_ms", 20.0),
		res("scale-udp-4000", "p2pd", 1, "close_ms", 30.0),
		res("scale-udp-4000", "plain", 1, "close_ms", 15.0),
		// No round with both: the ratio of the medians, no range.
		res("tcp-stream", "p2pd", 1, "mb_per_s", 30.0),
		res("tcp-stream", "stdlib", 2, "mb_per_s", 20.0),
	}
	out := renderRows(compare(rs))
	for _, s := range []string{
		"| tcp-rr | replies_per_s ↑ | 200 | stdlib | 100 | 1.11 | 0.50–3.00 | 3/3 | ✓ ≥ 1.00 |",
		"| scale-udp-4000 | close_ms ↓ | 20 | plain | 17.5 | 1.25 | 0.50–2.00 | 2/2 | ✗ ≤ 1.20 |",
		"| tcp-stream | mb_per_s ↑ | 30 | stdlib | 20 | 1.50 | — | 1/1 | ✓ ≥ 1.00 |",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
	growth := renderGrowth(rs)
	if !strings.Contains(growth, "| 20 | 17.5 | 1.25 |") {
		t.Errorf("growth table does not pair runs:\n%s", growth)
	}
}
