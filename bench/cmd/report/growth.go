package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// growthBaseline is the implementation every growth bench compares with.
const growthBaseline = "plain"

// growthMetrics are the columns of a growth table, by family prefix.
var growthMetrics = map[string][]string{
	"scale-": {"open_ms", "close_ms", "bytes_per_listener", "go_per_listener"},
	"conns-": {"heap_stack_per_conn", "rss_per_conn"},
}

func familyMetrics(family string) []string {
	for p, ms := range growthMetrics {
		if strings.HasPrefix(family, p) {
			return ms
		}
	}
	return nil
}

// mainRows drops the growth benches' rows that have no target: those are
// in the growth tables.
func mainRows(rows []row) []row {
	return slices.DeleteFunc(slices.Clone(rows), func(r row) bool {
		_, _, growth := growthName(r.bench)
		return growth && r.target == nil
	})
}

// renderGrowth prints one table per growth family (scale-tcp, scale-udp,
// conns-idle, conns-msg): one row per size, and for every metric the
// medians of p2pd and plain and their ratio (see pairedRatio).
func renderGrowth(rs []result) string {
	t := summarize(rs)
	sizes := map[string][]int{}
	var families []string
	for b := range t {
		f, n, ok := growthName(b)
		if !ok {
			continue
		}
		if _, seen := sizes[f]; !seen {
			families = append(families, f)
		}
		sizes[f] = append(sizes[f], n)
	}
	slices.Sort(families)
	var sb strings.Builder
	if len(families) == 0 {
		sb.WriteString("(no growth results)\n")
	}
	for _, f := range families {
		ms := familyMetrics(f)
		ns := sizes[f]
		slices.Sort(ns)
		fmt.Fprintf(&sb, "### %s\n\n| n |", f)
		for _, m := range ms {
			fmt.Fprintf(&sb, " %s %s p2pd | %s | p2pd/%s |", m, direction(m), growthBaseline, growthBaseline)
		}
		sb.WriteString("\n| ---: |" + strings.Repeat(" ---: | ---: | ---: |", len(ms)) + "\n")
		for _, n := range ns {
			b := fmt.Sprintf("%s-%d", f, n)
			fmt.Fprintf(&sb, "| %d |", n)
			for _, m := range ms {
				p, base := summary{value: math.NaN()}, summary{value: math.NaN()}
				if s, ok := t[b][m][subject]; ok {
					p = s
				}
				if s, ok := t[b][m][growthBaseline]; ok {
					base = s
				}
				r, _, _ := pairedRatio(p, base)
				fmt.Fprintf(&sb, " %s | %s | %s |", fmtNum(p.value), fmtNum(base.value), fmtRatio(r))
			}
			sb.WriteString("\n")
		}
		sb.WriteString("\n")
	}
	return sb.String()
}
