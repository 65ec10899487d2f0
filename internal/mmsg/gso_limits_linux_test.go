package mmsg

import (
	"bytes"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/p2pd/p2pd/internal/testnet"
)

// The limits of a coalesced entry, and what happens when the kernel
// allows less than the batch coalesced.

// TestGSOLimits: no entry holds more than maxSegs datagrams or more than
// maxGSOBytes, and a full batch still coalesces into its last entry.
func TestGSOLimits(t *testing.T) {
	tx, g, rxs := gsoPair(t, 1)
	to := addrOf(rxs[0])
	s := NewSendBatch(2, unix.AF_INET)
	s.SetGSO(g)
	var want [][]byte
	for k := range 100 {
		m := dgram(k, 10)
		want = append(want, m)
		if !s.Add(m, to, 0) {
			t.Fatalf("add %d refused", k)
		}
	}
	if s.n != 2 || s.segs[0] != maxSegs || s.segs[1] != 100-maxSegs {
		t.Fatalf("entries %d of %v, want 2 of [%d %d]", s.n, s.segs[:s.n], maxSegs, 100-maxSegs)
	}
	if s.Add(dgram(100, 20), to, 0) {
		t.Fatal("a longer datagram joined a full batch")
	}
	sendAll(t, tx, s)
	for k := range 3 {
		m := dgram(1000+k, 30000)
		want = append(want, m)
		if !s.Add(m, to, 0) {
			t.Fatalf("add large %d refused", k)
		}
	}
	if s.n != 2 || s.segs[0] != 2 || s.segs[1] != 1 {
		t.Fatalf("large: entries %d of %v, want [2 1]", s.n, s.segs[:s.n])
	}
	sendAll(t, tx, s)
	b := GetRecv(32, MaxSlot, false)
	defer PutRecv(b)
	got, _, _ := recvAll(t, rxs[0], b, len(want))
	for k := range want {
		if !bytes.Equal(got[k], want[k]) {
			t.Fatalf("datagram %d: %d bytes, want %d", k, len(got[k]), len(want[k]))
		}
	}
}

// TestGSONarrowsOnMTU: in a namespace whose loopback has a 1500-byte MTU,
// the kernel refuses segments of 2000 bytes (EINVAL): they go one by one,
// and from then on only segments up to safeSegment are coalesced.
func TestGSONarrowsOnMTU(t *testing.T) {
	h := testnet.New(t).AddHost("gso")
	h.IP(t, "link", "set", "lo", "mtu", "1500")
	var tx, rx *net.UDPConn
	h.Do(t, func() {
		var err error
		if tx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
		if rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
	})
	defer tx.Close()
	defer rx.Close()
	rx.SetReadBuffer(1 << 20)
	var g *GSO
	fdOf(t, tx).Control(func(fd uintptr) { g = NewGSO(fd) })
	if g == nil {
		testnet.SkipUnlessCI(t, "no UDP_SEGMENT on this kernel")
	}
	to := addrOf(rx)
	s := NewSendBatch(8, unix.AF_INET)
	s.SetGSO(g)
	var want [][]byte
	add := func(k, size int) {
		m := dgram(k, size)
		want = append(want, m)
		if !s.Add(m, to, 0) {
			t.Fatalf("add %d refused", k)
		}
	}
	for k := range 3 {
		add(k, 2000)
	}
	sendAll(t, tx, s)
	if g.Refused() != 1 || g.Max() != safeSegment {
		t.Fatalf("refused %d, max %d: want 1, %d", g.Refused(), g.Max(), safeSegment)
	}
	for k := range 3 {
		add(10+k, 1400) // larger than safeSegment: one entry each
	}
	for k := range 3 {
		add(20+k, 1000)
	}
	if s.n != 4 {
		t.Errorf("%d entries, want 4", s.n)
	}
	sendAll(t, tx, s)
	if g.Refused() != 1 || g.Sent() != 1 {
		t.Errorf("refused %d, sent %d: want 1, 1", g.Refused(), g.Sent())
	}
	b := GetRecv(16, 4096, false)
	defer PutRecv(b)
	got, _, _ := recvAll(t, rx, b, len(want))
	for k := range want {
		if !bytes.Equal(got[k], want[k]) {
			t.Errorf("datagram %d: %d bytes, want %d", k, len(got[k]), len(want[k]))
		}
	}
}

// TestGSOSplitInMiddle: an entry coalesced while GSO allowed more than it
// does at Send goes one by one between entries still sent coalesced.
func TestGSOSplitInMiddle(t *testing.T) {
	tx, g, rxs := gsoPair(t, 1)
	to := addrOf(rxs[0])
	s := NewSendBatch(8, unix.AF_INET)
	s.SetGSO(g)
	var want [][]byte
	for k, size := range []int{100, 100, 1400, 1400, 1400, 1, 100, 100} {
		m := dgram(k, size)
		want = append(want, m)
		s.Add(m, to, 0)
	}
	if s.n != 3 {
		t.Fatalf("%d entries, want 3", s.n)
	}
	g.max = safeSegment // as after a refusal
	sendAll(t, tx, s)
	if g.Sent() != 2 || g.Refused() != 0 {
		t.Errorf("sent %d refused %d, want 2, 0", g.Sent(), g.Refused())
	}
	b := GetRecv(16, 2048, false)
	defer PutRecv(b)
	got, _, _ := recvAll(t, rxs[0], b, len(want))
	for k := range want {
		if !bytes.Equal(got[k], want[k]) {
			t.Errorf("datagram %d: %d bytes, want %d", k, len(got[k]), len(want[k]))
		}
	}
}
