// Package proccpu reads the CPU time another process has used, from
// /proc/PID/stat (Linux), so a load generator can charge a server for the
// CPU it spent during a measurement.
package proccpu

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// Read returns the user+system CPU time process pid has used so far (its
// threads that exited included), with a resolution of 10 ms.
func Read(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return ParseStat(string(b))
}

// ParseStat returns utime+stime of one /proc/PID/stat line. The command
// name (field 2) is in parentheses and may hold spaces and parentheses,
// so the fields are counted from the last ')'.
func ParseStat(s string) (time.Duration, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("proccpu: no ')' in stat line")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proccpu: stat line has %d fields after the name, want at least 13", len(f))
	}
	var ticks uint64
	for _, v := range f[11:13] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proccpu: utime/stime %q: %w", v, err)
		}
		if n > 1<<40 || ticks > 1<<40 { // far beyond any real process: garbage
			return 0, fmt.Errorf("proccpu: utime/stime %d out of range", n)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / clockTicks), nil
}
