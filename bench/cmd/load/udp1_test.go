package main

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

// udpEcho serves echo on 127.0.0.1; corrupt, when set, flips a byte of
// every reply.
func udpEcho(t *testing.T, corrupt bool) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if corrupt && n > 20 {
				buf[20] ^= 1
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	t.Cleanup(func() { c.Close(); wg.Wait() })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestUDP1(t *testing.T) {
	cfg := config{mode: "udp1", addr: udpEcho(t, false), dur: 300 * time.Millisecond, conns: 2, size: 64, window: 1, timeout: 200 * time.Millisecond}
	cfg.cpu.pid = os.Getpid() // the server runs in this process
	m, err := runUDP1(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m["replies_per_s"] <= 0 || m["errors"] != 0 {
		t.Fatalf("metrics %v", m)
	}
	if _, ok := m["cpu_us_per_reply"]; !ok {
		t.Errorf("no cpu_us_per_reply in %v", m)
	}
}

func TestUDP1Corrupt(t *testing.T) {
	cfg := config{mode: "udp1", addr: udpEcho(t, true), dur: 300 * time.Millisecond, conns: 1, size: 64, window: 1, timeout: 200 * time.Millisecond}
	if _, err := runUDP1(&cfg); err == nil {
		t.Fatal("a corrupted echo was accepted")
	}
}

func TestCPUMeterAdd(t *testing.T) {
	m := cpuMeter{cpu0: time.Second, cpu1: 3 * time.Second, wall: 4 * time.Second, ok: true}
	out := map[string]float64{}
	m.add(out, "cpu_us_per_reply", 1000)
	if out["cpu_us_per_reply"] != 2000 || out["server_cpu_pct"] != 50 {
		t.Errorf("got %v", out)
	}
	out = map[string]float64{}
	(&cpuMeter{}).add(out, "cpu_us_per_reply", 1000)
	m.add(out, "x", 0)
	if len(out) != 0 {
		t.Errorf("unmeasured or empty work added %v", out)
	}
}
