package main

import (
	"math/rand/v2"
	"testing"
)

func TestMsgRoundTrip(t *testing.T) {
	for _, size := range []int{16, 17, 23, 64, 1000, 65507} {
		b := make([]byte, size)
		fillMsg(b, 3, 42)
		if !checkMsg(b, size, 3, 42) || msgSeq(b) != 42 {
			t.Fatalf("size %d: a message does not check against itself", size)
		}
		if checkMsg(b, size, 4, 42) || checkMsg(b, size, 3, 43) || checkMsg(b[:size-1], size, 3, 42) {
			t.Fatalf("size %d: a message checks against another id, seq or length", size)
		}
		for _, i := range []int{0, 7, 8, size - 1} {
			b[i] ^= 1
			if checkMsg(b, size, 3, 42) {
				t.Fatalf("size %d: a flipped byte %d is not detected", size, i)
			}
			b[i] ^= 1
		}
	}
}

func TestStream(t *testing.T) {
	s := newStream(32 << 10)
	o := s.start(5)
	full := make([]byte, 0, 300<<10)
	for len(full) < 300<<10 { // writes of one size, read back in others
		full = append(full, s.chunk(o+uint64(len(full)), 7000)...)
	}
	for off := 0; off < len(full); {
		n := min(1+rand.IntN(40<<10), len(full)-off)
		if !s.check(full[off:off+n], o+uint64(off)) {
			t.Fatalf("bytes %d..%d do not check", off, off+n)
		}
		off += n
	}
	if s.check(full[1:1000], o) {
		t.Fatal("a stream shifted by one byte checks")
	}
	if s.check(full[:1000], s.start(6)) {
		t.Fatal("another connection's stream checks")
	}
}

func TestHist(t *testing.T) {
	var h hist
	for v := int64(1); v <= 100000; v++ {
		h.add(v * 1000) // 1 µs .. 100 ms, uniform
	}
	for _, q := range []float64{0.5, 0.99} {
		want := q * 100e6
		got := float64(h.quantile(q))
		if got < want*0.98 || got > want*1.02 {
			t.Errorf("quantile(%v) = %v, want %v ± 2 %%", q, got, want)
		}
	}
	for _, v := range []uint64{0, 1, 63, 64, 127, 128, 1 << 20, 1<<40 - 1} {
		i := histIndex(v)
		if mid := histValue(i); v >= 64 && (float64(mid) < float64(v)*0.98 || float64(mid) > float64(v)*1.02) {
			t.Errorf("value %d falls in bucket %d of middle %d", v, i, mid)
		}
	}
	h.add(-5)
	h.add(1 << 62) // clamped, no panic
	var empty hist
	if empty.quantile(0.5) != 0 {
		t.Error("an empty histogram has a non-zero median")
	}
}
