package main

import "math/bits"

// hist is a fixed-size log-linear latency histogram in nanoseconds: values
// below 64 ns are exact, larger ones fall in buckets 1/64 of their power of
// two wide (under 1.6 % relative error). Values up to 2^40 ns (18 min) fit;
// larger ones are clamped into the last bucket.
type hist struct {
	counts [histBuckets]uint32
	n      uint64
}

const (
	histSub     = 64 // sub-buckets per power of two
	histMaxExp  = 34 // 2^(6+34) ns
	histBuckets = histSub * (histMaxExp + 1)
)

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - 7 // v>>e is in [64, 128)
	i := (e+1)*histSub + int(v>>e) - histSub
	return min(i, histBuckets-1)
}

// histValue returns the middle of bucket i.
func histValue(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	lo := uint64(i%histSub+histSub) << e
	return lo + (uint64(1)<<e)/2
}

func (h *hist) add(ns int64) {
	if ns < 0 {
		ns = 0
	}
	h.counts[histIndex(uint64(ns))]++
	h.n++
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q <= 1) in nanoseconds, 0 when empty.
func (h *hist) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			return histValue(i)
		}
	}
	return histValue(histBuckets - 1)
}
