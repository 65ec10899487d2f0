package main

import (
	"cmp"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
)

// subject is the implementation every other one is compared with.
const subject = "p2pd"

// lowerBetter lists the metrics where a smaller value is better.
var lowerBetter = map[string]bool{
	"p50_us": true, "p99_us": true, "loss_pct": true, "errors": true,
	"open_ms": true, "close_ms": true, "fds": true,
	"bytes_per_listener": true, "heap_per_listener": true, "stack_per_listener": true, "go_per_listener": true,
	"cpu_us_per_reply": true, "cpu_us_per_mb": true, "cpu_us_per_query": true,
	"heap_stack_per_conn": true, "rss_per_conn": true, "goroutines_per_conn": true,
	"avg_latency_us": true, "max_latency_us": true, "lost_pct": true, "reconnects": true,
}

// neutral lists the metrics that are neither better high nor low (they
// explain the others).
var neutral = map[string]bool{"server_cpu_pct": true}

// target is a bound on one metric of a row (one bench, metric and
// baseline): on the ratio p2pd/baseline, or on one side's value itself
// (the row still shows the ratio).
type target struct {
	bench    string // path.Match pattern
	metric   string
	baseline string
	atLeast  bool // value >= bound; else value <= bound
	on       side // what the bound is on
	bound    float64
	note     string
}

// side is what a target bounds.
type side int

const (
	onRatio    side = iota // p2pd/baseline
	onSubject              // p2pd's value, an absolute bound
	onBaseline             // the baseline's value, an absolute bound
)

// targets: gnet and raw rows, udpwork-echo's batch rows and the DNS benches
// have none (information only). The udp-echo and udp1-echo ones are listed
// per bench: a pattern udp*-echo would also match udpwork-echo, where the
// work per message, not the server, makes the numbers against batch.
var targets = []target{
	{bench: "udp-echo", metric: "replies_per_s", baseline: "stdlib", atLeast: true, bound: 1.4},
	{bench: "udp-echo", metric: "replies_per_s", baseline: "batch", atLeast: true, bound: 1.1},
	{bench: "udp1-echo", metric: "replies_per_s", baseline: "batch", atLeast: true, bound: 1.1},
	{bench: "udp-echo", metric: "cpu_us_per_reply", baseline: "batch", bound: 0.8, note: "server CPU per reply"},
	{bench: "udp1-echo", metric: "cpu_us_per_reply", baseline: "batch", bound: 0.8, note: "server CPU per reply"},
	// udpwork-echo: one socket against fan-out, where the server is the
	// bottleneck; p2pd-fanout is a baseline here, so the rows read p2pd
	// (one socket) / fan-out.
	{bench: "udpwork-echo", metric: "replies_per_s", baseline: "p2pd-fanout", bound: 0.8, note: "fan-out ≥ 1.25 × one socket"},
	{bench: "udpwork-echo", metric: "server_cpu_pct", baseline: "p2pd-fanout", atLeast: true, on: onBaseline, bound: 120, note: "fan-out serves on more than one core"},
	{bench: "tcp-rr", metric: "replies_per_s", baseline: "stdlib", atLeast: true, bound: 1.0},
	{bench: "tcp-rr", metric: "p99_us", baseline: "stdlib", bound: 1.0, note: "p99 p2pd ≤ stdlib"},
	{bench: "tcp-stream", metric: "mb_per_s", baseline: "stdlib", atLeast: true, bound: 1.0},
	{bench: "scale-*-4000", metric: "open_ms", baseline: "plain", bound: 1.1},
	{bench: "scale-*-4000", metric: "close_ms", baseline: "plain", bound: 1.2},
	{bench: "scale-*-4000", metric: "bytes_per_listener", baseline: "plain", bound: 1.1, note: "RSS per listener"},
	{bench: "conns-idle-19000", metric: "heap_stack_per_conn", baseline: "plain", on: onSubject, bound: 3072, note: "p2pd ≤ 3 KB per idle connection"},
}

func findTarget(bench, metric, baseline string) *target {
	for i, t := range targets {
		if ok, _ := path.Match(t.bench, bench); ok && t.metric == metric && t.baseline == baseline {
			return &targets[i]
		}
	}
	return nil
}

// ratio returns p/b, NaN when it means nothing (b is 0 or either is NaN).
func ratio(p, b float64) float64 {
	if b == 0 || math.IsNaN(p) || math.IsNaN(b) {
		return math.NaN()
	}
	return p / b
}

// pairedRatio is p/b as the table shows it: the median of the paired runs'
// ratios with the lowest and highest (see paired), or, where no run pairs,
// the ratio of the medians with NaN for both.
func pairedRatio(p, b summary) (r, lo, hi float64) {
	r, lo, hi, n := paired(p, b)
	if n == 0 {
		r = ratio(p.value, b.value)
	}
	return r, lo, hi
}

// measure returns what t bounds in row r: the ratio, p2pd's value or the
// baseline's.
func (t *target) measure(r row) float64 {
	switch t.on {
	case onSubject:
		return r.p2pd.value
	case onBaseline:
		return r.base.value
	}
	return r.ratio
}

// check returns "✓" or "✗" for v (see measure) against t, "?" when v is
// NaN.
func (t *target) check(r float64) string {
	switch {
	case math.IsNaN(r):
		return "?"
	case t.atLeast && r >= t.bound, !t.atLeast && r <= t.bound:
		return "✓"
	}
	return "✗"
}

func (t *target) String() string {
	op := "≤"
	if t.atLeast {
		op = "≥"
	}
	var s string
	switch t.on {
	case onSubject:
		s = subject + " " + op + " " + strconv.FormatFloat(t.bound, 'f', -1, 64)
	case onBaseline:
		s = t.baseline + " " + op + " " + strconv.FormatFloat(t.bound, 'f', -1, 64)
	default:
		s = op + " " + strconv.FormatFloat(t.bound, 'f', 2, 64)
	}
	if t.note != "" {
		s += " (" + t.note + ")"
	}
	return s
}

// row is one line of the comparison table: one metric of one bench, p2pd
// against one baseline. ratio is the median of the paired runs' ratios
// (see paired), lo and hi the lowest and highest of them; where no run
// pairs, ratio is that of the medians and lo and hi are NaN.
type row struct {
	bench, metric, baseline string
	p2pd, base              summary
	ratio, lo, hi           float64
	target                  *target
}

// compare builds the rows of the table: per bench and metric, one row per
// baseline (every implementation that is not p2pd); a bench without
// baseline gets one row with p2pd alone.
func compare(rs []result) []row {
	t := summarize(rs)
	var rows []row
	for _, b := range sortedKeys(t, benchLess) {
		for _, m := range sortedKeys(t[b], metricLess) {
			impls := t[b][m]
			p, ok := impls[subject]
			if !ok {
				p = summary{value: math.NaN()}
			}
			bases := sortedKeys(impls, implLess)
			bases = slices.DeleteFunc(bases, func(s string) bool { return s == subject })
			if len(bases) == 0 {
				rows = append(rows, row{bench: b, metric: m, p2pd: p, base: summary{value: math.NaN()}, ratio: math.NaN(), lo: math.NaN(), hi: math.NaN()})
				continue
			}
			for _, base := range bases {
				r := row{bench: b, metric: m, baseline: base, p2pd: p, base: impls[base], target: findTarget(b, m, base)}
				r.ratio, r.lo, r.hi = pairedRatio(p, r.base)
				rows = append(rows, r)
			}
		}
	}
	return rows
}

// withMissingTargets appends a row for every target that no row
// matched (a bench that did not run or failed), so that every target
// shows, as "?".
func withMissingTargets(rows []row) []row {
	for i := range targets {
		t := &targets[i]
		if slices.ContainsFunc(rows, func(r row) bool { return r.target == t }) {
			continue
		}
		rows = append(rows, row{bench: t.bench, metric: t.metric, baseline: t.baseline,
			p2pd: summary{value: math.NaN()}, base: summary{value: math.NaN()}, ratio: math.NaN(), lo: math.NaN(), hi: math.NaN(), target: t})
	}
	return rows
}

func sortedKeys[V any](m map[string]V, less func(a, b string) int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, less)
	return ks
}

// order ranks known names first, in the listed order; unknown ones follow,
// sorted.
func order(known []string) func(a, b string) int {
	rank := func(s string) int {
		if i := slices.Index(known, s); i >= 0 {
			return i
		}
		return len(known)
	}
	return func(a, b string) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a, b))
	}
}

var (
	metricLess = order([]string{"replies_per_s", "mb_per_s", "qps", "cpu_us_per_reply", "cpu_us_per_mb", "cpu_us_per_query",
		"server_cpu_pct", "p50_us", "p99_us", "avg_latency_us", "max_latency_us", "loss_pct", "lost_pct", "reconnects",
		"open_ms", "close_ms", "bytes_per_listener", "heap_per_listener", "stack_per_listener", "go_per_listener",
		"heap_stack_per_conn", "rss_per_conn", "goroutines_per_conn", "fds", "errors"})
	implLess = order([]string{"stdlib", "batch", "raw", "gnet", "p2pd-fanout", "plain", "miekg"})
)

// benchLess puts the echo benches first, then the DNS ones, then the
// growth benches (FAMILY-N) by family and by N as a number.
func benchLess(a, b string) int {
	known := order([]string{"tcp-rr", "tcp-stream", "udp-echo", "udp1-echo", "udpwork-echo", "dns-udp", "dns-tcp"})
	fa, na, oka := growthName(a)
	fb, nb, okb := growthName(b)
	if oka && okb {
		return cmp.Or(strings.Compare(fa, fb), cmp.Compare(na, nb))
	}
	if oka != okb { // growth benches after the others
		if oka {
			return 1
		}
		return -1
	}
	return known(a, b)
}

// growthName splits a bench measured at several sizes, "scale-tcp-4000"
// or "conns-idle-19000", into its family ("scale-tcp") and size (4000).
func growthName(s string) (family string, n int, ok bool) {
	if !strings.HasPrefix(s, "scale-") && !strings.HasPrefix(s, "conns-") {
		return "", 0, false
	}
	i := strings.LastIndexByte(s, '-')
	num, family := s[i+1:], s[:i]
	if num == "" || strings.Trim(num, "0123456789") != "" || strings.HasSuffix(family, "-") || !strings.Contains(family, "-") {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return "", 0, false
	}
	return s[:i], n, true
}
