package main

// The process side of a run: memory, descriptors and goroutines measured,
// the descriptor limit raised, a free port range found.

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// snapshot is the process's memory, fds and goroutines at one moment.
type snapshot struct {
	mem        runtime.MemStats
	rss        uint64 // bytes
	fds        int
	goroutines int
	waiting    uint64
}

// measure settles the heap (two GCs, free to the OS) and takes a snapshot.
func measure() snapshot {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var s snapshot
	runtime.ReadMemStats(&s.mem)
	s.rss = readRSS()
	s.fds = countFDs()
	s.goroutines = runtime.NumGoroutine()
	s.waiting = waitingGoroutines()
	return s
}

// readRSS returns VmRSS from /proc/self/status in bytes, 0 if unknown.
func readRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// countFDs returns the number of open file descriptors (the directory
// read's own counts in every snapshot alike).
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

var waitingSample = []metrics.Sample{{Name: "/sched/goroutines/waiting:goroutines"}}

// waitingGoroutines returns the number of goroutines parked on I/O or a
// sync primitive.
func waitingGoroutines() uint64 {
	metrics.Read(waitingSample)
	if waitingSample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return waitingSample[0].Value.Uint64()
}

// waitParked waits until every goroutine started since s is parked (on
// I/O or a sync primitive), so that every listener goroutine (plain: one
// each; p2pd: none, its listeners park without one) has run up to its
// Accept or ReadFrom and grown its stack to what that takes, then a little
// longer. It reports whether they were within timeout.
func waitParked(s snapshot, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for int64(waitingGoroutines())-int64(s.waiting) < int64(runtime.NumGoroutine()-s.goroutines) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	return true
}

// waitGoroutines waits until at most want goroutines run, up to timeout.
func waitGoroutines(want int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func writeHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC() // the profile's in-use numbers are as of the last GC
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("heap profile: %w", err)
	}
	return f.Close()
}

// raiseFDLimit raises RLIMIT_NOFILE to its hard limit and fails when that
// does not leave room for n sockets.
func raiseFDLimit(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
		}
	}
	const spare = 64 // stdio, epoll, the checks' sockets, ...
	if need := uint64(n) + spare; lim.Cur < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d (hard limit %d): %d listeners need about %d; raise the hard limit (ulimit -Hn, limits.conf or LimitNOFILE)",
			lim.Cur, lim.Max, n, need)
	}
	return nil
}

// pickBase finds base such that ports base..base+n-1 of proto are free on
// 127.0.0.1. Candidates start at 20000 and go up by 1000, then from 19000
// down to 2000; ranges that overlap the kernel's ephemeral port range
// (where outgoing connections take ports, and leave TIME_WAIT sockets
// that a listener cannot bind over) are tried last. With Linux's default
// ephemeral range, 16,000 listeners fit only below 32768.
func pickBase(proto string, n int) (int, error) {
	eLo, eHi := ephemeralRange()
	var bases []int
	for base := 20000; base+n-1 <= 65535; base += 1000 {
		bases = append(bases, base)
	}
	for base := 19000; base >= 2000; base -= 1000 {
		if base+n-1 <= 65535 {
			bases = append(bases, base)
		}
	}
	var last error
	for _, inEphemeral := range []bool{false, true} {
		for _, base := range bases {
			if overlaps := base <= eHi && base+n-1 >= eLo; overlaps != inEphemeral {
				continue
			}
			err := probeRange(proto, base, n)
			if err == nil {
				return base, nil
			}
			last = err
		}
	}
	if last == nil {
		return 0, fmt.Errorf("-n %d: no range of %d ports from 2000 up", n, n)
	}
	return 0, fmt.Errorf("no free range of %d %s ports on 127.0.0.1 from 2000 up (last: %w); pass -base", n, proto, last)
}

// probeRange binds every port with a raw socket and closes it at once. It
// uses raw syscalls rather than the net package so that the probe leaves
// no poll descriptors or buffers behind that the measured run would reuse.
// A TCP socket gets SO_REUSEADDR as a TCP listener does, so that
// connections in TIME_WAIT do not count as taken; a listening socket does.
func probeRange(proto string, base, n int) error {
	typ := syscall.SOCK_STREAM
	if proto == "udp" {
		typ = syscall.SOCK_DGRAM
	}
	for port := base; port < base+n; port++ {
		fd, err := syscall.Socket(syscall.AF_INET, typ|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		if typ == syscall.SOCK_STREAM {
			syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		}
		err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: loopback.As4()})
		syscall.Close(fd)
		if err != nil {
			return fmt.Errorf("%s port 127.0.0.1:%d: %w", proto, port, err)
		}
	}
	return nil
}

// ephemeralRange reads net.ipv4.ip_local_port_range (Linux's default if
// it cannot).
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return lo, hi
	}
	return l, h
}
