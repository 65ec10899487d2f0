package main

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// perfStats is what dnsperf's summary says.
type perfStats struct {
	sent, completed, lost int64
	qps                   float64
	avgLatency            float64 // seconds
	minLatency            float64
	maxLatency            float64
	stddev                float64
	reconnections         int64 // TCP; -1 when not printed
}

// parsePerf parses dnsperf's output (version 2.x):
//
//	Queries sent:         171342
//	Queries completed:    171342 (100.00%)
//	Queries lost:         0 (0.00%)
//	...
//	Queries per second:   85651.985259
//
//	Average Latency (s):  0.000852 (min 0.000015, max 0.042628)
//	Latency StdDev (s):   0.000937
//
// Only the first "Statistics:" block counts: with -m tcp a second latency
// block (connection latency, under "Connection Statistics:") follows. It
// fails unless sent, completed, lost, queries per second and the average
// latency were all found with sane values.
func parsePerf(out string) (perfStats, error) {
	st := perfStats{sent: -1, completed: -1, lost: -1, qps: math.NaN(), avgLatency: math.NaN(),
		minLatency: math.NaN(), maxLatency: math.NaN(), stddev: math.NaN(), reconnections: -1}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch line {
		case "Statistics:", "Connection Statistics:":
			section = line
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok || section == "" {
			continue
		}
		val = strings.TrimSpace(val)
		first, rest, _ := strings.Cut(val, " ")
		var err error
		switch {
		case section == "Connection Statistics:":
			if key == "Reconnections" {
				st.reconnections, err = parseCount(first)
			}
		case key == "Queries sent":
			st.sent, err = parseCount(first)
		case key == "Queries completed":
			st.completed, err = parseCount(first)
		case key == "Queries lost":
			st.lost, err = parseCount(first)
		case key == "Queries per second":
			st.qps, err = parseNonNeg(first)
		case key == "Latency StdDev (s)":
			st.stddev, err = parseNonNeg(first)
		case key == "Average Latency (s)":
			if st.avgLatency, err = parseNonNeg(first); err == nil {
				st.minLatency, st.maxLatency, err = parseMinMax(rest)
			}
		}
		if err != nil {
			return perfStats{}, fmt.Errorf("dnsperf line %q: %w", line, err)
		}
	}
	switch {
	case st.sent < 0 || st.completed < 0 || st.lost < 0:
		return perfStats{}, errors.New("dnsperf output lacks the query counts")
	case math.IsNaN(st.qps) || math.IsNaN(st.avgLatency):
		return perfStats{}, errors.New("dnsperf output lacks queries per second or the average latency")
	case st.completed > st.sent || st.lost > st.sent:
		return perfStats{}, fmt.Errorf("dnsperf counts do not add up: %d sent, %d completed, %d lost", st.sent, st.completed, st.lost)
	}
	return st, nil
}

func parseCount(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("count %q", s)
	}
	return n, nil
}

func parseNonNeg(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("value %q", s)
	}
	return v, nil
}

// parseMinMax parses "(min 0.000015, max 0.042628)".
func parseMinMax(s string) (lo, hi float64, err error) {
	s, ok := strings.CutPrefix(strings.TrimSpace(s), "(min ")
	if !ok {
		return 0, 0, fmt.Errorf("no (min ..., max ...) in %q", s)
	}
	s, ok = strings.CutSuffix(s, ")")
	a, b, ok2 := strings.Cut(s, ", max ")
	if !ok || !ok2 {
		return 0, 0, fmt.Errorf("no (min ..., max ...) in %q", s)
	}
	if lo, err = parseNonNeg(a); err != nil {
		return 0, 0, err
	}
	if hi, err = parseNonNeg(b); err != nil {
		return 0, 0, err
	}
	return lo, hi, nil
}
