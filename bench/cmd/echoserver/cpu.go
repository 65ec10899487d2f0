package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// cpuMark is the process's CPU time at a moment, and its threads'.
type cpuMark struct {
	wall    time.Time
	user    time.Duration
	sys     time.Duration
	threads map[string]time.Duration // /proc/self/task/<tid>: utime+stime
}

func startCPU() cpuMark { return markCPU() }

func markCPU() cpuMark {
	m := cpuMark{wall: time.Now(), threads: threadCPU()}
	m.user, m.sys = processCPU()
	return m
}

// report prints the CPU time used since m against the wall time: cores
// above 1 means more than one core served. busiest lists the threads that
// used the most, in cores (CPU time over wall time).
func (m cpuMark) report(w io.Writer) {
	now := markCPU()
	wall := now.wall.Sub(m.wall)
	user, sys := now.user-m.user, now.sys-m.sys
	var busy []float64
	for tid, t := range now.threads {
		if d := t - m.threads[tid]; d > 0 {
			busy = append(busy, d.Seconds()/wall.Seconds())
		}
	}
	slices.SortFunc(busy, func(a, b float64) int { return cmp.Compare(b, a) })
	var top []string
	for i, b := range busy {
		if i == 4 {
			break
		}
		top = append(top, strconv.FormatFloat(b, 'f', 2, 64))
	}
	fmt.Fprintf(w, "cpu user_s=%.3f sys_s=%.3f wall_s=%.3f cores=%.2f threads_busy=%d busiest=%s\n",
		user.Seconds(), sys.Seconds(), wall.Seconds(), (user+sys).Seconds()/wall.Seconds(), len(busy), strings.Join(top, ","))
}

// threadCPU reads every thread's utime+stime from /proc/self/task (clock
// ticks of 10 ms, USER_HZ 100); empty where /proc is missing.
func threadCPU() map[string]time.Duration {
	m := map[string]time.Duration{}
	dirs, _ := filepath.Glob("/proc/self/task/*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces: fields count from
		// after its closing parenthesis, where field 3 is the state.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
		st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
		if err1 == nil && err2 == nil {
			m[filepath.Base(d)] = time.Duration(ut+st) * 10 * time.Millisecond
		}
	}
	return m
}
