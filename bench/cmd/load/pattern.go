package main

import (
	"bytes"
	"encoding/binary"
)

// A request message (rr and udp modes) is an 8-byte little-endian sequence
// number followed by bytes derived from the sender's id and that sequence
// number, so a reply proves which request it answers and that it came back
// intact, to the right socket.

// minMsg is the smallest message: the sequence number and 8 bytes of
// pattern, so that even the smallest reply proves the sender's id.
const minMsg = 16

// fillMsg writes the message of (id, seq) into b.
func fillMsg(b []byte, id uint32, seq uint64) {
	binary.LittleEndian.PutUint64(b, seq)
	x := msgSeed(id, seq)
	i := 8
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], x+uint64(i))
	}
	for ; i < len(b); i++ {
		b[i] = byte(x >> (i % 8 * 8))
	}
}

// checkMsg reports whether b is exactly the message of (id, seq) of length
// size.
func checkMsg(b []byte, size int, id uint32, seq uint64) bool {
	if len(b) != size || binary.LittleEndian.Uint64(b) != seq {
		return false
	}
	x := msgSeed(id, seq)
	i := 8
	for ; i+8 <= len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) != x+uint64(i) {
			return false
		}
	}
	for ; i < len(b); i++ {
		if b[i] != byte(x>>(i%8*8)) {
			return false
		}
	}
	return true
}

// msgSeq returns the sequence number a message claims (0 if it is too short
// to hold one; checkMsg then fails).
func msgSeq(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func msgSeed(id uint32, seq uint64) uint64 {
	return (seq ^ uint64(id)<<40) * 0x9E3779B97F4A7C15
}

// streamPeriod is the period of the byte stream of stream mode. It is prime,
// so it never lines up with write or read sizes: a byte lost, duplicated or
// reordered anywhere shifts the stream and fails the comparison.
const streamPeriod = 65521

// stream is the byte stream stream mode sends: byte o of connection id is
// table[(o + start(id)) % streamPeriod]. The table repeats its first
// maxChunk bytes past the period so any chunk of up to maxChunk bytes is
// one slice.
type stream struct {
	table    []byte
	maxChunk int
}

func newStream(maxChunk int) *stream {
	t := make([]byte, streamPeriod+maxChunk)
	x := uint64(0x2545F4914F6CDD1D)
	for i := range streamPeriod {
		x ^= x << 13 // xorshift64
		x ^= x >> 7
		x ^= x << 17
		t[i] = byte(x >> 24)
	}
	for i := streamPeriod; i < len(t); i++ {
		t[i] = t[i-streamPeriod]
	}
	return &stream{table: t, maxChunk: maxChunk}
}

// start is where connection id's stream begins in the period, so streams
// of two connections differ.
func (s *stream) start(id uint32) uint64 { return uint64(id) * 7919 % streamPeriod }

// chunk returns the n (<= maxChunk) stream bytes at offset o.
func (s *stream) chunk(o uint64, n int) []byte {
	p := o % streamPeriod
	return s.table[p : p+uint64(n)]
}

// check reports whether b equals the stream from offset o; len(b) may be
// anything.
func (s *stream) check(b []byte, o uint64) bool {
	for len(b) > 0 {
		n := min(len(b), s.maxChunk)
		if !bytes.Equal(b[:n], s.chunk(o, n)) {
			return false
		}
		b, o = b[n:], o+uint64(n)
	}
	return true
}
