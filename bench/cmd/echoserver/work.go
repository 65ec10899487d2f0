package main

import (
	"fmt"
	"time"
)

// workIters is how many rounds of spin every implementation's handler runs
// per message before it echoes (-work; 0: none). The work is a fixed
// amount of computation, calibrated once at startup, not a wait on the
// clock: a handler that the scheduler takes off its CPU mid-way still has
// all of it to do, so -work is CPU time per message whatever else shares
// the cores.
var workIters int

// work is the per-message work of -work, the same for every
// implementation.
func work() {
	// xorshift64 never reaches 0 from a nonzero state: the test only uses
	// the result, so that nothing can drop the loop.
	if workIters > 0 && spin(workIters, 0x9e3779b97f4a7c15) == 0 {
		panic("spin reached 0")
	}
}

// spin runs n rounds of xorshift64 from x: a serial chain of ALU
// operations, no memory traffic. Not inlined, so that its cost does not
// depend on the caller.
//
//go:noinline
func spin(n int, x uint64) uint64 {
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

// calibrateWork sets workIters so that work takes d of CPU: it times a
// fixed number of rounds a few times and keeps the fastest (the least
// disturbed by other processes), and returns the rounds per d.
func calibrateWork(d time.Duration) (int, error) {
	if d < 0 || d > time.Second {
		return 0, fmt.Errorf("-work must be in [0, 1s]")
	}
	if d == 0 {
		workIters = 0
		return 0, nil
	}
	const rounds = 1 << 20 // about 1 ms
	best := time.Duration(1<<63 - 1)
	for range 10 {
		t := time.Now()
		if spin(rounds, 1) == 0 {
			panic("spin reached 0")
		}
		best = min(best, time.Since(t))
	}
	workIters = max(1, int(float64(rounds)*d.Seconds()/best.Seconds()))
	return workIters, nil
}
