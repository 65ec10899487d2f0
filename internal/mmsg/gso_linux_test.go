package mmsg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/p2pd/p2pd/internal/testnet"
	"golang.org/x/sys/unix"
)

// gsoPair is a sender with GSO and n receivers, all on IPv4 loopback.
func gsoPair(t *testing.T, n int) (*net.UDPConn, *GSO, []*net.UDPConn) {
	t.Helper()
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	var g *GSO
	fdOf(t, tx).Control(func(fd uintptr) { g = NewGSO(fd) })
	if g == nil {
		testnet.SkipUnlessCI(t, "no UDP_SEGMENT on this kernel")
	}
	var rxs []*net.UDPConn
	for range n {
		rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		rx.SetReadBuffer(4 << 20)
		t.Cleanup(func() { rx.Close() })
		rxs = append(rxs, rx)
	}
	return tx, g, rxs
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// dgram is datagram k to a receiver: size bytes naming k, then a pattern.
func dgram(k, size int) []byte {
	b := make([]byte, size)
	if size >= 4 {
		binary.BigEndian.PutUint32(b, uint32(k))
	}
	for i := 4; i < size; i++ {
		b[i] = byte(k*7 + i)
	}
	return b
}

// expand lists the datagrams s holds, entry by entry, as the kernel cuts
// them.
func expand(s *SendBatch) (out [][]byte) {
	for i := s.next; i < s.n; i++ {
		d := s.data[s.offs[i]:s.offs[i+1]]
		for k := 0; k < s.segs[i]; k++ {
			l := min(s.size[i], len(d))
			if k == s.segs[i]-1 {
				l = len(d)
			}
			out = append(out, d[:l])
			d = d[l:]
		}
	}
	return out
}

type gsoOp struct{ to, size int }

// TestGSOCoalesce sends mixed sizes to mixed peers through real sockets:
// every datagram arrives alone and intact, in order per peer, and runs to
// one peer left in fewer entries than datagrams.
func TestGSOCoalesce(t *testing.T) {
	tx, g, rxs := gsoPair(t, 2)
	ops := []gsoOp{
		{0, 100}, {0, 100}, {0, 100}, {0, 60}, // one entry, shorter last
		{0, 100}, {0, 100}, // a new entry: the last was short
		{1, 200}, {1, 200}, {1, 300}, // a longer one starts another
		{0, 100}, {1, 300}, {0, 100}, // peers alternating: no coalescing
		{0, 0}, {0, 0}, {0, 50}, {0, 50}, // empty datagrams stand alone
		{1, 1400}, {1, 1400}, {1, 1400}, {1, 1},
	}
	s := NewSendBatch(32, unix.AF_INET)
	s.SetGSO(g)
	var want [2][][]byte
	var all [][]byte
	for k, op := range ops {
		m := dgram(k, op.size)
		if !s.Add(m, addrOf(rxs[op.to]), 0) {
			t.Fatalf("add %d refused", k)
		}
		want[op.to] = append(want[op.to], m)
		all = append(all, m)
	}
	if s.Pending() != len(ops) {
		t.Fatalf("pending %d, want %d", s.Pending(), len(ops))
	}
	if got := expand(s); fmt.Sprint(got) != fmt.Sprint(all) {
		t.Fatalf("entries hold %v\nwant %v", got, all)
	}
	if s.n != 11 {
		t.Errorf("%d entries for %d datagrams, want 11", s.n, len(ops))
	}
	sendAll(t, tx, s)
	if g.Sent() != 5 || g.Refused() != 0 {
		t.Errorf("GSO sent %d refused %d, want 5 and 0", g.Sent(), g.Refused())
	}
	for i, rx := range rxs {
		b := GetRecv(32, 2048, false)
		got, _, trunc := recvAll(t, rx, b, len(want[i]))
		PutRecv(b)
		for k := range want[i] {
			if !bytes.Equal(got[k], want[i][k]) || trunc[k] {
				t.Errorf("peer %d datagram %d: %d bytes %x, want %d bytes %x", i, k, len(got[k]), head(got[k]), len(want[i][k]), head(want[i][k]))
			}
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }

// TestGSORefused: a socket with SO_NO_CHECK, where the kernel refuses
// UDP_SEGMENT (EINVAL), still sends every datagram, one by one, and GSO
// goes off for it.
func TestGSORefused(t *testing.T) {
	tx, g, rxs := gsoPair(t, 1)
	fdOf(t, tx).Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1); err != nil {
			testnet.SkipUnlessCI(t, "SO_NO_CHECK: %v", err)
		}
	})
	to := addrOf(rxs[0])
	s := NewSendBatch(8, unix.AF_INET)
	s.SetGSO(g)
	var want [][]byte
	for k := range 10 {
		m := dgram(k, 64)
		want = append(want, m)
		s.Add(m, to, 0)
	}
	if s.n != 1 {
		t.Fatalf("%d entries, want 1", s.n)
	}
	sendAll(t, tx, s)
	if g.Refused() != 1 || g.Max() != 0 || g.Sent() != 0 {
		t.Errorf("refused %d max %d sent %d, want 1, 0, 0", g.Refused(), g.Max(), g.Sent())
	}
	for k := range 3 {
		m := dgram(100+k, 64)
		want = append(want, m)
		s.Add(m, to, 0)
	}
	if s.n != 3 {
		t.Errorf("after the refusal: %d entries for 3 datagrams", s.n)
	}
	sendAll(t, tx, s)
	b := GetRecv(32, 2048, false)
	defer PutRecv(b)
	got, _, _ := recvAll(t, rxs[0], b, len(want))
	for k := range want {
		if !bytes.Equal(got[k], want[k]) {
			t.Fatalf("datagram %d differs", k)
		}
	}
}

// TestGSOBadDestination: a coalesced entry the kernel refuses for its
// destination (port 0) costs each datagram its own error, and GSO stays.
func TestGSOBadDestination(t *testing.T) {
	tx, g, rxs := gsoPair(t, 1)
	to := addrOf(rxs[0])
	s := NewSendBatch(8, unix.AF_INET)
	s.SetGSO(g)
	s.Add([]byte("ok1"), to, 0)
	for range 3 {
		s.Add([]byte("bad"), netip.AddrPortFrom(to.Addr(), 0), 0)
	}
	s.Add([]byte("ok2"), to, 0)
	s.Add([]byte("ok3"), to, 0)
	rc := fdOf(t, tx)
	errs := sendSkipping(rc, s)
	if len(errs) != 3 || !errors.Is(errs[0], unix.EINVAL) {
		t.Fatalf("errors %v, want 3 EINVAL", errs)
	}
	if g.Max() == 0 || g.Refused() != 0 || g.Sent() != 1 {
		t.Errorf("max %d refused %d sent %d: GSO blamed for a destination", g.Max(), g.Refused(), g.Sent())
	}
	b := GetRecv(4, 16, false)
	defer PutRecv(b)
	got, _, _ := recvAll(t, rxs[0], b, 3)
	if string(got[0]) != "ok1" || string(got[1]) != "ok2" || string(got[2]) != "ok3" {
		t.Errorf("got %q", got)
	}
}

// TestGSOSource: on IPv6 with PKTINFO, datagrams coalesce only with the
// same source; they arrive intact from it.
func TestGSOSource(t *testing.T) {
	tx, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified})
	if err != nil {
		testnet.SkipUnlessCI(t, "no IPv6: %v", err)
	}
	defer tx.Close()
	var g *GSO
	fdOf(t, tx).Control(func(fd uintptr) { g = NewGSO(fd) })
	if g == nil {
		testnet.SkipUnlessCI(t, "no UDP_SEGMENT on this kernel")
	}
	rx, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		testnet.SkipUnlessCI(t, "no IPv6 loopback: %v", err)
	}
	defer rx.Close()
	to := addrOf(rx)
	lo := netip.IPv6Loopback()
	s := NewSendBatch(8, unix.AF_INET6)
	s.SetGSO(g)
	var want [][]byte
	for k, src := range []netip.Addr{lo, lo, {}, {}, lo, lo} {
		m := dgram(k, 40)
		want = append(want, m)
		s.AddFrom(m, to, 0, src, 1)
	}
	if s.n != 3 {
		t.Fatalf("%d entries, want 3 (by source)", s.n)
	}
	sendAll(t, tx, s)
	b := GetRecv(8, 2048, false)
	defer PutRecv(b)
	got, from, _ := recvAll(t, rx, b, len(want))
	for k := range want {
		if !bytes.Equal(got[k], want[k]) || from[k].Addr() != lo {
			t.Errorf("datagram %d: %x from %v", k, head(got[k]), from[k])
		}
	}
}

// FuzzGSOQueue: whatever the sizes and peers, the entries hold exactly
// the datagrams queued, in order, and obey the GSO limits.
func FuzzGSOQueue(f *testing.F) {
	f.Add([]byte{0, 10, 0, 10, 0, 5, 1, 10, 0, 10})
	f.Add([]byte{0, 0, 0, 0, 2, 255, 2, 255, 2, 255})
	f.Fuzz(func(t *testing.T, ops []byte) {
		peers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"), netip.MustParseAddrPort("127.0.0.2:1")}
		s := NewSendBatch(8, unix.AF_INET)
		s.SetGSO(&GSO{max: 600})
		var want [][]byte
		for k := 0; k+1 < len(ops); k += 2 {
			size := int(ops[k+1]) * 4
			m := dgram(k, size)
			if s.Add(m, peers[int(ops[k])%len(peers)], 0) {
				want = append(want, m)
			}
		}
		if s.Pending() != len(want) {
			t.Fatalf("pending %d, want %d", s.Pending(), len(want))
		}
		if got := expand(s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("entries hold %v, want %v", got, want)
		}
		for i := range s.n {
			l := s.offs[i+1] - s.offs[i]
			if s.segs[i] > 1 && (s.segs[i] > maxSegs || l > maxGSOBytes || s.size[i] > 600 || s.size[i] == 0) {
				t.Fatalf("entry %d: %d segments of %d, %d bytes", i, s.segs[i], s.size[i], l)
			}
		}
	})
}

// TestPutSegment checks the control message against the kernel's layout.
func TestPutSegment(t *testing.T) {
	b := make([]byte, CtrlSize)
	n := putSegment(b, 1200)
	if n != unix.CmsgSpace(2) {
		t.Fatalf("room %d, want %d", n, unix.CmsgSpace(2))
	}
	msgs, err := unix.ParseSocketControlMessage(b[:n])
	if err != nil || len(msgs) != 1 {
		t.Fatal(msgs, err)
	}
	h := msgs[0].Header
	if h.Level != unix.IPPROTO_UDP || h.Type != unix.UDP_SEGMENT || binary.NativeEndian.Uint16(msgs[0].Data) != 1200 {
		t.Errorf("got %+v %x", h, msgs[0].Data)
	}
}

// TestGSODualStack: an IPv6 socket coalesces replies to an IPv4 peer
// (IPv4-mapped) too.
func TestGSODualStack(t *testing.T) {
	tx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
	if err != nil {
		testnet.SkipUnlessCI(t, "no dual-stack socket: %v", err)
	}
	defer tx.Close()
	var g *GSO
	fdOf(t, tx).Control(func(fd uintptr) { g = NewGSO(fd) })
	if g == nil {
		testnet.SkipUnlessCI(t, "no UDP_SEGMENT on this kernel")
	}
	_, _, rxs := gsoPair(t, 1)
	to := addrOf(rxs[0])
	s := NewSendBatch(8, unix.AF_INET6)
	s.SetGSO(g)
	var want [][]byte
	for k := range 5 {
		m := dgram(k, 500)
		want = append(want, m)
		s.Add(m, to, 0)
	}
	if s.n != 1 {
		t.Fatalf("%d entries, want 1", s.n)
	}
	sendAll(t, tx, s)
	b := GetRecv(8, 2048, false)
	defer PutRecv(b)
	got, _, _ := recvAll(t, rxs[0], b, len(want))
	for k := range want {
		if !bytes.Equal(got[k], want[k]) {
			t.Errorf("datagram %d: %d bytes", k, len(got[k]))
		}
	}
	if g.Sent() != 1 || g.Refused() != 0 {
		t.Errorf("sent %d refused %d", g.Sent(), g.Refused())
	}
}
