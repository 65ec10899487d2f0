package p2pd

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/p2pd/p2pd/internal/mmsg"
	"github.com/p2pd/p2pd/internal/testnet"
)

// gsoServer returns a bound socket holding, already queued, the
// datagrams of two clients (sizes per client, in the order given; each
// datagram names its client and index), and the clients.
func gsoServer(t *testing.T, sizes [2][]int) (*net.UDPConn, [2]*net.UDPConn, [2][][]byte) {
	return gsoServerOn(t, net.IPv4(127, 0, 0, 1), sizes)
}

// gsoServerOn is gsoServer on the address ip (the clients send to
// 127.0.0.1).
func gsoServerOn(t *testing.T, ip net.IP, sizes [2][]int) (*net.UDPConn, [2]*net.UDPConn, [2][][]byte) {
	t.Helper()
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		testnet.SkipUnlessCI(t, "no IPv4 loopback: %v", err)
	}
	srv.SetReadBuffer(1 << 20)
	var clis [2]*net.UDPConn
	var sent [2][][]byte
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: srv.LocalAddr().(*net.UDPAddr).Port}
	for c := range clis {
		cli, err := net.DialUDP("udp4", nil, to)
		if err != nil {
			srv.Close()
			t.Fatal(err)
		}
		cli.SetReadBuffer(1 << 20)
		t.Cleanup(func() { cli.Close() })
		clis[c] = cli
	}
	// Interleave the clients' runs: client 0's first half, client 1's, then
	// the rest of client 0's.
	send := func(c int, sz []int) {
		for _, n := range sz {
			m := bytes.Repeat([]byte{byte('a' + c)}, n)
			copy(m, fmt.Sprintf("%d/%03d", c, len(sent[c])))
			if _, err := clis[c].Write(m); err != nil {
				t.Fatal(err)
			}
			sent[c] = append(sent[c], m)
		}
	}
	h := len(sizes[0]) / 2
	send(0, sizes[0][:h])
	send(1, sizes[1])
	send(0, sizes[0][h:])
	return srv, clis, sent
}

// readOrdered reads len(want) datagrams from c and checks each against
// want, in order.
func readOrdered(t *testing.T, c *net.UDPConn, want [][]byte) {
	t.Helper()
	buf := make([]byte, 70000)
	c.SetReadDeadline(time.Now().Add(waitFor))
	for i, w := range want {
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d of %d replies: %v", i, len(want), err)
		}
		if !bytes.Equal(buf[:k], w) {
			t.Fatalf("reply %d: %d bytes %.8q, want %d bytes %.8q", i, k, buf[:k], len(w), w)
		}
	}
}

func gsoSizes() [2][]int {
	var s [2][]int
	for range 12 {
		s[0] = append(s[0], 100)
	}
	s[0] = append(s[0], 40, 100, 100, 1400, 1400, 1400, 8, 0, 0, 9000, 9000)
	s[1] = []int{300, 300, 300, 300, 299, 12, 12}
	return s
}

// TestUDPGSOEcho: replies of one batch to each of two peers, mixed sizes,
// leave coalesced and arrive one by one, intact, in order per peer.
func TestUDPGSOEcho(t *testing.T) {
	srv, clis, sent := gsoServer(t, gsoSizes())
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: echoCB, UDPBatch: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	requireGSO(t, srv)
	for c := range clis {
		readOrdered(t, clis[c], sent[c])
	}
	p.ub.mu.Lock()
	s, r := p.ub.gso.Sent(), p.ub.gso.Refused()
	p.ub.mu.Unlock()
	if s == 0 || r != 0 {
		t.Errorf("GSO sent %d entries, refused %d: want some, none", s, r)
	}
	if e := p.ub.sendErrs.Load(); e != 0 {
		t.Errorf("%d replies dropped", e)
	}
}

// TestUDPGSOWildcard: on a wildcard socket, where replies carry
// IP_PKTINFO, they are coalesced too and come from the address the
// clients sent to.
func TestUDPGSOWildcard(t *testing.T) {
	srv, clis, sent := gsoServerOn(t, net.IPv4zero, gsoSizes())
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: echoCB, UDPBatch: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	requireGSO(t, srv)
	if !p.ub.pktinfo {
		t.Fatal("a wildcard pipe without PKTINFO")
	}
	for c := range clis {
		readOrdered(t, clis[c], sent[c]) // a connected socket takes replies from 127.0.0.1 only
	}
	p.ub.mu.Lock()
	s := p.ub.gso.Sent()
	p.ub.mu.Unlock()
	if s == 0 {
		t.Error("no reply coalesced")
	}
}

// TestUDPGSOFallback: where the kernel refuses UDP_SEGMENT (a socket with
// SO_NO_CHECK: EINVAL), the replies leave one by one, all of them, and
// the pipe stops coalescing.
func TestUDPGSOFallback(t *testing.T) {
	srv, clis, sent := gsoServer(t, gsoSizes())
	rc, err := srv.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1); err != nil {
			testnet.SkipUnlessCI(t, "SO_NO_CHECK: %v", err)
		}
	})
	p, err := ServePacketConn(srv, &PipeConfig{OnMsg: echoCB, UDPBatch: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	requireGSO(t, srv)
	for c := range clis {
		readOrdered(t, clis[c], sent[c])
	}
	p.ub.mu.Lock()
	s, r, m := p.ub.gso.Sent(), p.ub.gso.Refused(), p.ub.gso.Max()
	p.ub.mu.Unlock()
	// The batch's entries were coalesced before the refusal: the first
	// one's turned GSO off, and the others went one by one untried.
	if s != 0 || r != 1 || m != 0 {
		t.Errorf("GSO sent %d, refused %d, max %d: want 0, 1, 0", s, r, m)
	}
	// Later batches are not coalesced at all.
	for c := range clis {
		sent[c] = sent[c][:0]
		for i := range 20 {
			m := fmt.Appendf(nil, "again %d/%02d", c, i)
			clis[c].Write(m)
			sent[c] = append(sent[c], m)
		}
	}
	for c := range clis {
		readOrdered(t, clis[c], sent[c])
	}
	p.ub.mu.Lock()
	r2 := p.ub.gso.Refused()
	p.ub.mu.Unlock()
	if r2 != r {
		t.Errorf("refused %d entries after GSO went off", r2-r)
	}
	if e := p.ub.sendErrs.Load(); e != 0 {
		t.Errorf("%d replies dropped", e)
	}
}

// requireGSO skips where the kernel has no UDP_SEGMENT (a pipe asks its
// socket at its first batch).
func requireGSO(t *testing.T, c *net.UDPConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var g *mmsg.GSO
	rc.Control(func(fd uintptr) { g = mmsg.NewGSO(fd) })
	if g == nil {
		testnet.SkipUnlessCI(t, "no UDP_SEGMENT on this kernel")
	}
}
