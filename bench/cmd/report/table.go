package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// renderRows prints the comparison table in Markdown.
func renderRows(rows []row) string {
	var sb strings.Builder
	sb.WriteString("| bench | metric | p2pd | baseline | baseline value | p2pd/baseline | range | n | target |\n")
	sb.WriteString("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |\n")
	if len(rows) == 0 {
		sb.WriteString("| (no results) | | | | | | | | |\n")
	}
	for _, r := range rows {
		tgt, rat := "", fmtRatio(r.ratio)
		if r.target != nil {
			tgt = r.target.check(r.target.measure(r)) + " " + r.target.String()
			if r.target.on == onRatio && rat == fmtRatio(r.target.bound) && r.ratio != r.target.bound {
				rat = strconv.FormatFloat(r.ratio, 'f', 3, 64) // 1.201 ✗ ≤ 1.20, not 1.20 ✗
			}
		}
		base := r.baseline
		if base == "" {
			base = "—"
		}
		spread := "—"
		if !math.IsNaN(r.lo) && r.lo != r.hi {
			spread = fmtRatio(r.lo) + "–" + fmtRatio(r.hi)
		}
		fmt.Fprintf(&sb, "| %s | %s %s | %s | %s | %s | %s | %s | %d/%d | %s |\n",
			r.bench, r.metric, direction(r.metric), fmtNum(r.p2pd.value), base, fmtNum(r.base.value),
			rat, spread, r.p2pd.rounds, r.base.rounds, tgt)
	}
	return sb.String()
}

// direction is the arrow of a metric: ↑ higher is better, ↓ lower is
// better, · neither.
func direction(metric string) string {
	switch {
	case neutral[metric]:
		return "·"
	case lowerBetter[metric]:
		return "↓"
	}
	return "↑"
}

// renderGoBench prints the micro-benchmark table in Markdown.
func renderGoBench(bs []goBench) string {
	var sb strings.Builder
	sb.WriteString("| benchmark | ns/op | B/op | allocs/op | runs | target |\n")
	sb.WriteString("| --- | ---: | ---: | ---: | ---: | --- |\n")
	if len(bs) == 0 {
		sb.WriteString("| (no results) | | | | | |\n")
	}
	for _, b := range bs {
		tgt := ""
		if b.zeroAllocTarget {
			mark := "✗"
			switch {
			case math.IsNaN(b.allocsOp):
				mark = "?"
			case b.allocsOp == 0:
				mark = "✓"
			}
			tgt = mark + " allocs/op = 0"
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %d | %s |\n",
			b.name, fmtNum(b.nsOp), fmtNum(b.bOp), fmtNum(b.allocsOp), b.runs, tgt)
	}
	return sb.String()
}

// fmtNum prints a value with about 3 significant digits, and whole numbers
// from 100 up; "—" for NaN (missing).
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "—"
	case a >= 100 || v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// fmtRatio prints a ratio with 2 decimals, "—" when it means nothing.
func fmtRatio(r float64) string {
	if math.IsNaN(r) {
		return "—"
	}
	return strconv.FormatFloat(r, 'f', 2, 64)
}
