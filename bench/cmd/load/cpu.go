package main

import (
	"fmt"
	"os"
	"time"

	"github.com/p2pd/p2pd/bench/internal/proccpu"
)

// cpuMeter charges the server (-server-pid) for the CPU time it used
// between start and stop: the measurement window of a mode, dialing
// excluded. A zero pid measures nothing.
type cpuMeter struct {
	pid        int
	cpu0, cpu1 time.Duration
	wall0      time.Time
	wall       time.Duration
	ok         bool
}

func (m *cpuMeter) start() {
	if m.pid == 0 {
		return
	}
	t, err := proccpu.Read(m.pid)
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: server CPU not measured: %v\n", err)
		return
	}
	m.cpu0, m.wall0, m.ok = t, time.Now(), true
}

func (m *cpuMeter) stop() {
	if !m.ok {
		return
	}
	t, err := proccpu.Read(m.pid)
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: server CPU not measured: %v\n", err)
		m.ok = false
		return
	}
	m.cpu1, m.wall = t, time.Since(m.wall0)
}

// add puts the server's CPU µs per unit of work (replies, MB) into out as
// metric name, and its CPU use in % of one CPU over the window, when it
// was measured and there was work.
func (m *cpuMeter) add(out map[string]float64, name string, work float64) {
	if !m.ok || work <= 0 || out == nil || m.wall <= 0 {
		return
	}
	used := m.cpu1 - m.cpu0
	out[name] = float64(used.Microseconds()) / work
	out["server_cpu_pct"] = 100 * used.Seconds() / m.wall.Seconds()
}
