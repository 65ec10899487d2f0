package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// result is one JSON line of load or scale.
type result struct {
	Bench   string             `json:"bench"`
	Impl    string             `json:"impl"`
	Round   int                `json:"round"`
	Metrics map[string]float64 `json:"metrics"`
}

// readResults reads JSON lines. Lines that do not start with '{' (build
// messages, blank lines) are ignored; malformed JSON lines are returned in
// bad, with their line number.
func readResults(r io.Reader) (out []result, bad []string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		s := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(s, "{") {
			continue
		}
		var res result
		if err := json.Unmarshal([]byte(s), &res); err != nil || res.Bench == "" || res.Impl == "" {
			bad = append(bad, fmt.Sprintf("line %d: not a result: %.80s", n, s))
			continue
		}
		out = append(out, res)
	}
	if err := sc.Err(); err != nil {
		bad = append(bad, err.Error())
	}
	return out, bad
}

// median returns the median of vs (the mean of the middle two for an even
// count), NaN for none. It does not modify vs.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// summary is the median of one metric of one implementation in one bench,
// over how many runs it was taken, and the runs by round, in the order
// they ran.
type summary struct {
	value   float64
	rounds  int
	byRound map[int][]float64
}

// table holds summaries by bench, metric and implementation.
type table map[string]map[string]map[string]summary

// summarize groups results by bench, metric and implementation and takes
// the median over runs.
func summarize(rs []result) table {
	vals := map[string]map[string]map[string][]float64{}
	runs := map[[3]string]map[int][]float64{}
	for _, r := range rs {
		for m, v := range r.Metrics {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			if vals[r.Bench] == nil {
				vals[r.Bench] = map[string]map[string][]float64{}
			}
			if vals[r.Bench][m] == nil {
				vals[r.Bench][m] = map[string][]float64{}
			}
			vals[r.Bench][m][r.Impl] = append(vals[r.Bench][m][r.Impl], v)
			k := [3]string{r.Bench, m, r.Impl}
			if runs[k] == nil {
				runs[k] = map[int][]float64{}
			}
			runs[k][r.Round] = append(runs[k][r.Round], v)
		}
	}
	t := table{}
	for b, ms := range vals {
		t[b] = map[string]map[string]summary{}
		for m, impls := range ms {
			t[b][m] = map[string]summary{}
			for impl, vs := range impls {
				t[b][m][impl] = summary{median(vs), len(vs), runs[[3]string{b, m, impl}]}
			}
		}
	}
	return t
}

// paired compares p with b run by run: the k-th run of p in a round with
// the k-th run of b in the same round, seconds apart (bench/run rotates
// the order at every repeat). It returns the median of those ratios
// p/b, the lowest and the highest, and how many there were; NaN and 0
// when no round has both. Pairing cancels what the machine's speed does
// between rounds, which moved the medians of one side by up to 1.5x in
// one run on the 2-CPU box.
func paired(p, b summary) (med, lo, hi float64, n int) {
	var rs []float64
	for round, pv := range p.byRound {
		bv := b.byRound[round]
		for k := 0; k < len(pv) && k < len(bv); k++ {
			if r := ratio(pv[k], bv[k]); !math.IsNaN(r) {
				rs = append(rs, r)
			}
		}
	}
	if len(rs) == 0 {
		return math.NaN(), math.NaN(), math.NaN(), 0
	}
	return median(rs), slices.Min(rs), slices.Max(rs), len(rs)
}
