package main

import (
	"testing"
	"time"
)

func TestWork(t *testing.T) {
	defer func() { workIters = 0 }()
	if _, err := calibrateWork(-time.Microsecond); err == nil {
		t.Error("a negative -work is accepted")
	}
	if n, err := calibrateWork(0); n != 0 || err != nil || workIters != 0 {
		t.Errorf("-work 0: %d rounds, %v", n, err)
	}
	const d = 2 * time.Millisecond
	n, err := calibrateWork(d)
	if err != nil || n < 1 || workIters != n {
		t.Fatalf("-work %v: %d rounds (workIters %d), %v", d, n, workIters, err)
	}
	// The calibration keeps its fastest trial, so work takes at least
	// about d of wall time; another process can only make it longer.
	best := time.Hour
	for range 5 {
		start := time.Now()
		work()
		best = min(best, time.Since(start))
	}
	if best < d/2 {
		t.Errorf("work took %v, want about %v", best, d)
	}
}
