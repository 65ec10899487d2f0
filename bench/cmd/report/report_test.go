package main

import (
	"math"
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
		// udp-echo: p2pd medians 150 (1.5 × stdlib: ✓), 0.9 × batch (✗).
		res("udp-echo", "p2pd", 1, "replies_per_s", 100.0),
		res("udp-echo", "p2pd", 2, "replies_per_s", 150.0),
		res("udp-echo", "p2pd", 3, "replies_per_s", 900.0),
		res("udp-echo", "stdlib", 1, "replies_per_s", 100.0),
		res("udp-echo", "batch", 1, "replies_per_s", 200.0),
		res("udp-echo", "batch", 2, "replies_per_s", 140.0),
		res("udp-echo", "batch", 3, "replies_per_s", 166.0),
		// tcp-rr p99: lower is better; 1.04 is within the 5 % margin.
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
		{"tcp-rr", "p99_us", "stdlib", 1.04, "✓"},
		{"tcp-stream", "mb_per_s", "stdlib", math.NaN(), "?"},
		{"udp-echo", "replies_per_s", "stdlib", 1.5, "✓"},
		{"udp-echo", "replies_per_s", "batch", 150.0 / 166, "✗"},
		{"scale-tcp-100", "open_ms", "plain", 3, ""},
		{"scale-tcp-100", "errors", "plain", math.NaN(), ""},
		{"scale-tcp-4000", "open_ms", "plain", 3, "✗"},
		{"scale-tcp-4000", "bytes_per_listener", "plain", 1.25, "✓"},
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
			mark = r.target.check(r.ratio)
		}
		if mark != w.mark {
			t.Errorf("row %d (%s %s vs %s): mark %q, want %q", i, w.bench, w.metric, w.baseline, mark, w.mark)
		}
	}
	out := renderRows(rows)
	for _, s := range []string{"| udp-echo | replies_per_s ↑ | 150 | stdlib | 100 | 1.50 | 3/1 | ✓ ≥ 1.40 |", "p99_us ↓", "5 % noise margin"} {
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
		{"udp-echo", "replies_per_s", "gnet", 1.0, "✓"},
		{"tcp-stream", "mb_per_s", "stdlib", 0.95, "✓"},
		{"tcp-rr", "replies_per_s", "gnet", 0.94, "✗"},
		{"tcp-rr", "p99_us", "stdlib", 1.06, "✗"},
		{"scale-udp-4000", "open_ms", "plain", 1.5, "✓"},
		{"scale-udp-4000", "bytes_per_listener", "plain", 2.01, "✗"},
		{"scale-udp-4000", "bytes_per_listener", "plain", math.NaN(), "?"},
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
	for _, none := range [][3]string{{"tcp-rr", "p50_us", "gnet"}, {"scale-tcp-1000", "open_ms", "plain"}, {"udp-echo", "loss_pct", "stdlib"}} {
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
