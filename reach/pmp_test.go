package reach

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
)

var (
	ctlLoopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	ctlExtIP    = netip.AddrFrom4([4]byte{203, 0, 113, 7})
)

// fakeCtl is a NAT-PMP or PCP server on loopback: it records each request
// and sends back what reply returns for it (nothing: silence).
type fakeCtl struct {
	c    *net.UDPConn
	reqs chan []byte
	done chan struct{}
}

func startFakeCtl(t *testing.T, reply func(req []byte, from netip.AddrPort) [][]byte) *fakeCtl {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ctlLoopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCtl{c: c, reqs: make(chan []byte, 64), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := bytes.Clone(buf[:n])
			select {
			case f.reqs <- req:
			default:
			}
			for _, b := range reply(req, from) {
				c.WriteToUDPAddrPort(b, from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-f.done
	})
	return f
}

func (f *fakeCtl) port() uint16 { return uint16(f.c.LocalAddr().(*net.UDPAddr).Port) }

// next is the next request the fake got.
func (f *fakeCtl) next(t *testing.T) []byte {
	t.Helper()
	select {
	case r := <-f.reqs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the fake got no request")
		return nil
	}
}

// closedPort is a loopback UDP port where nothing listens.
func closedPort(t *testing.T) uint16 {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ctlLoopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	return port
}

// sendFrom sends b to to from another socket than the server's.
func sendFrom(t *testing.T, to netip.AddrPort, b []byte) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ctlLoopback, 0)))
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	c.WriteToUDPAddrPort(b, to)
}

func testPMP(port uint16, timeout time.Duration) *pmpClient {
	p := newPMP(ctlLoopback, ctlLoopback, timeout)
	p.port = port
	return p
}

const pmpEpoch = 1000

// pmpAnswer answers req like a NAT-PMP gateway with external address
// ctlExtIP: the suggested port, or 40000, for the requested lifetime capped
// at an hour.
func pmpAnswer(req []byte) []byte {
	if len(req) < 2 || req[0] != 0 {
		return pmpError(req[1], 1)
	}
	switch req[1] {
	case pmpOpAddr:
		b := make([]byte, pmpAddrLen)
		b[1] = pmpReply
		binary.BigEndian.PutUint32(b[4:], pmpEpoch)
		copy(b[8:], ctlExtIP.AsSlice())
		return b
	case pmpOpUDP, pmpOpTCP:
		if len(req) < pmpMapReqLen {
			return nil
		}
		ext, life := binary.BigEndian.Uint16(req[6:]), min(binary.BigEndian.Uint32(req[8:]), 3600)
		if ext == 0 {
			ext = 40000
		}
		if life == 0 {
			ext = 0
		}
		return pmpMapAnswer(req[1], binary.BigEndian.Uint16(req[4:]), ext, life)
	}
	return pmpError(req[1], 5)
}

func pmpMapAnswer(op byte, internal, external uint16, life uint32) []byte {
	b := make([]byte, pmpMapLen)
	b[1] = pmpReply + op
	binary.BigEndian.PutUint32(b[4:], pmpEpoch)
	binary.BigEndian.PutUint16(b[8:], internal)
	binary.BigEndian.PutUint16(b[10:], external)
	binary.BigEndian.PutUint32(b[12:], life)
	return b
}

// pmpError is the 8-byte error response of RFC 6886 §3.5.
func pmpError(op byte, code uint16) []byte {
	b := make([]byte, pmpErrLen)
	b[1] = pmpReply + op
	binary.BigEndian.PutUint16(b[2:], code)
	binary.BigEndian.PutUint32(b[4:], pmpEpoch)
	return b
}

func pmpServer(req []byte, _ netip.AddrPort) [][]byte { return [][]byte{pmpAnswer(req)} }

// checkErrText checks that err's text says "p2pd: " once, at the start.
func checkErrText(t *testing.T, err error) {
	t.Helper()
	if s := err.Error(); !strings.HasPrefix(s, "p2pd: ") || strings.Count(s, "p2pd: ") != 1 {
		t.Errorf("error text %q does not start with one \"p2pd: \"", s)
	}
}

func TestPMPMap(t *testing.T) {
	for _, c := range []struct {
		proto p2pd.Proto
		op    byte
	}{{p2pd.UDP, pmpOpUDP}, {p2pd.TCP, pmpOpTCP}} {
		f := startFakeCtl(t, pmpServer)
		p := testPMP(f.port(), 10*time.Second)
		internal := netip.AddrPortFrom(ctlLoopback, 5000)
		before := time.Now()
		l, err := p.Map(context.Background(), c.proto, internal, 6000, 2*time.Hour+time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := lease{Protocol: "nat-pmp", Proto: c.proto, Internal: internal,
			External: netip.AddrPortFrom(ctlExtIP, 6000), Lifetime: time.Hour, Epoch: pmpEpoch, Granted: l.Granted}
		if l != want {
			t.Errorf("lease %+v, want %+v", l, want)
		}
		if l.Granted.Before(before) || l.Granted.After(time.Now()) {
			t.Errorf("granted at %v, not during the call", l.Granted)
		}
		if r := f.next(t); !bytes.Equal(r, []byte{0, 0}) {
			t.Errorf("first request %x, want the external address's", r)
		}
		r := f.next(t)
		wantReq := []byte{0, c.op, 0, 0, 0x13, 0x88, 0x17, 0x70, 0, 0, 0x1c, 0x21} // 5000, 6000, 7201 s
		if !bytes.Equal(r, wantReq) {
			t.Errorf("map request %x, want %x", r, wantReq)
		}
	}
}

func TestPMPExternalAddr(t *testing.T) {
	f := startFakeCtl(t, pmpServer)
	ip, epoch, err := testPMP(f.port(), 10*time.Second).ExternalAddr(context.Background())
	if err != nil || ip != ctlExtIP || epoch != pmpEpoch {
		t.Errorf("ExternalAddr = %v, %d, %v", ip, epoch, err)
	}
}

// TestPMPRenew: with want 0, a renewal suggests the previous port.
func TestPMPRenew(t *testing.T) {
	f := startFakeCtl(t, pmpServer)
	p := testPMP(f.port(), 10*time.Second)
	internal := netip.AddrPortFrom(ctlLoopback, 5000)
	prev := lease{Protocol: "nat-pmp", Proto: p2pd.UDP, Internal: internal, External: netip.AddrPortFrom(ctlExtIP, 41234)}
	l, err := p.Map(context.Background(), p2pd.UDP, internal, 0, time.Minute, &prev)
	if err != nil {
		t.Fatal(err)
	}
	if l.External.Port() != 41234 || l.Lifetime != time.Minute {
		t.Errorf("renewed %v for %v", l.External, l.Lifetime)
	}
	f.next(t)
	if r := f.next(t); binary.BigEndian.Uint16(r[6:]) != 41234 {
		t.Errorf("renewal suggests port %d", binary.BigEndian.Uint16(r[6:]))
	}
}

func TestPMPUnmap(t *testing.T) {
	f := startFakeCtl(t, pmpServer)
	p := testPMP(f.port(), 10*time.Second)
	l := lease{Protocol: "nat-pmp", Proto: p2pd.TCP, Internal: netip.AddrPortFrom(ctlLoopback, 5000), External: netip.AddrPortFrom(ctlExtIP, 6000)}
	if err := p.Unmap(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	// Opcode 2, internal port 5000, external port 0, lifetime 0.
	if r, want := f.next(t), []byte{0, 2, 0, 0, 0x13, 0x88, 0, 0, 0, 0, 0, 0}; !bytes.Equal(r, want) {
		t.Errorf("delete request %x, want %x", r, want)
	}
	l.Internal = netip.AddrPortFrom(ctlLoopback, 0)
	if err := p.Unmap(context.Background(), l); err == nil {
		t.Error("Unmap of internal port 0 (every mapping) was sent")
	}
}

func TestPMPRefused(t *testing.T) {
	for _, c := range []struct {
		code   uint16
		name   string
		onAddr bool // the external address request fails, not the mapping
		full   bool // a 16-byte error response
	}{
		{1, "unsupported version", false, false},
		{2, "not authorized", false, true},
		{3, "network failure", true, false},
		{4, "out of resources", false, false},
		{5, "unsupported opcode", false, false},
		{99, "unknown result", false, true},
	} {
		f := startFakeCtl(t, func(req []byte, from netip.AddrPort) [][]byte {
			if len(req) < 2 || (req[1] == pmpOpAddr) != c.onAddr {
				return pmpServer(req, from)
			}
			if c.full {
				b := pmpMapAnswer(req[1], 1, 0, 0) // a wrong port does not matter in an error
				binary.BigEndian.PutUint16(b[2:], c.code)
				return [][]byte{b}
			}
			return [][]byte{pmpError(req[1], c.code)}
		})
		_, err := testPMP(f.port(), 10*time.Second).Map(context.Background(), p2pd.UDP, netip.AddrPortFrom(ctlLoopback, 5000), 0, time.Hour, nil)
		var me *MapError
		if !errors.Is(err, ErrRefused) || !errors.As(err, &me) || me.Code != int(c.code) || me.Protocol != "nat-pmp" {
			t.Errorf("code %d: err %v, want a nat-pmp MapError with the code", c.code, err)
			continue
		}
		if !strings.Contains(err.Error(), c.name) {
			t.Errorf("code %d: %q does not say %q", c.code, err, c.name)
		}
		checkErrText(t, err)
		t.Log(err)
	}
}

// TestPMPGrantedNothing: a success that maps no port is a refusal.
func TestPMPGrantedNothing(t *testing.T) {
	f := startFakeCtl(t, func(req []byte, from netip.AddrPort) [][]byte {
		if req[1] == pmpOpUDP {
			return [][]byte{pmpMapAnswer(req[1], 5000, 0, 3600)}
		}
		return pmpServer(req, from)
	})
	_, err := testPMP(f.port(), 10*time.Second).Map(context.Background(), p2pd.UDP, netip.AddrPortFrom(ctlLoopback, 5000), 0, time.Hour, nil)
	if !errors.Is(err, ErrRefused) {
		t.Errorf("err %v, want ErrRefused", err)
	}
}

// TestPMPIgnoresJunk: malformed and unrelated datagrams before the answer
// are ignored.
func TestPMPIgnoresJunk(t *testing.T) {
	f := startFakeCtl(t, func(req []byte, from netip.AddrPort) [][]byte {
		ans := pmpAnswer(req)
		junk := [][]byte{
			{},
			{0},
			{0, pmpReply + req[1]},                   // too short
			{1, pmpReply + req[1], 0, 0, 0, 0, 0, 0}, // wrong version
			req,                                      // an echo of the request
			pmpError(pmpOpAddr+42, 2),                // another opcode's error
			append(pmpError(req[1], 2), 0),           // an error, neither 8 bytes nor full
			bytes.Repeat([]byte{0xff}, 1500),         // oversized noise
		}
		if req[1] == pmpOpAddr {
			junk = append(junk, ans[:pmpAddrLen-1]) // a success cut short
		} else {
			junk = append(junk,
				ans[:pmpMapLen-1],                     // a success cut short
				pmpMapAnswer(req[1], 5001, 1, 3600),   // another internal port's
				pmpMapAnswer(3-req[1], 5000, 2, 3600)) // the other protocol's
		}
		return append(junk, ans)
	})
	p := testPMP(f.port(), 10*time.Second)
	l, err := p.Map(context.Background(), p2pd.UDP, netip.AddrPortFrom(ctlLoopback, 5000), 6000, time.Hour, nil)
	if err != nil || l.External != netip.AddrPortFrom(ctlExtIP, 6000) {
		t.Errorf("Map = %v, %v", l.External, err)
	}
}

// TestPMPOtherSource: a datagram from another port than the gateway's is
// not taken for the answer.
func TestPMPOtherSource(t *testing.T) {
	f := startFakeCtl(t, func(req []byte, from netip.AddrPort) [][]byte {
		forged := pmpAnswer(req)
		copy(forged[8:], []byte{198, 51, 100, 1})
		sendFrom(t, from, forged)
		return pmpServer(req, from)
	})
	ip, _, err := testPMP(f.port(), 10*time.Second).ExternalAddr(context.Background())
	if err != nil || ip != ctlExtIP {
		t.Errorf("ExternalAddr = %v, %v", ip, err)
	}
}

func TestPMPRetransmit(t *testing.T) {
	var n atomic.Int32
	f := startFakeCtl(t, func(req []byte, from netip.AddrPort) [][]byte {
		if n.Add(1) == 1 {
			return nil // the first request is lost
		}
		return pmpServer(req, from)
	})
	ip, _, err := testPMP(f.port(), 10*time.Second).ExternalAddr(context.Background())
	if err != nil || ip != ctlExtIP {
		t.Errorf("ExternalAddr = %v, %v", ip, err)
	}
}

func TestPMPNoServer(t *testing.T) {
	testNoServer(t, func(port uint16, timeout time.Duration) gateway { return testPMP(port, timeout) })
}

func TestPMPSilent(t *testing.T) {
	testSilent(t, func(port uint16, timeout time.Duration) gateway { return testPMP(port, timeout) })
}

func TestPMPCancel(t *testing.T) {
	testCancel(t, func(port uint16, timeout time.Duration) gateway { return testPMP(port, timeout) })
}

func TestPMPCtxDeadline(t *testing.T) {
	testCtxDeadline(t, func(port uint16, timeout time.Duration) gateway { return testPMP(port, timeout) })
}

type newGateway func(port uint16, timeout time.Duration) gateway

func mapLoopback(ctx context.Context, g gateway) error {
	_, err := g.Map(ctx, p2pd.UDP, netip.AddrPortFrom(ctlLoopback, 5000), 0, time.Hour, nil)
	return err
}

// testNoServer: an ICMP port unreachable ends the call well before its
// timeout, with ErrNoGateway.
func testNoServer(t *testing.T, mk newGateway) {
	const timeout = 20 * time.Second
	g := mk(closedPort(t), timeout)
	start := time.Now()
	err := mapLoopback(context.Background(), g)
	if took := time.Since(start); took > timeout/2 {
		t.Errorf("took %v", took)
	}
	var me *MapError
	if !errors.Is(err, ErrNoGateway) || !errors.As(err, &me) || me.Protocol != g.Protocol() {
		t.Errorf("err %v, want ErrNoGateway in a MapError", err)
	}
	if err != nil {
		checkErrText(t, err)
		t.Log(err)
	}
}

// testSilent: a server that does not answer gets retransmissions, then
// ErrNoGateway at the timeout.
func testSilent(t *testing.T, mk newGateway) {
	t.Parallel()
	f := startFakeCtl(t, func([]byte, netip.AddrPort) [][]byte { return nil })
	const timeout = 2 * time.Second
	start := time.Now()
	err := mapLoopback(context.Background(), mk(f.port(), timeout))
	took := time.Since(start)
	if !errors.Is(err, ErrNoGateway) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want ErrNoGateway for the timeout", err)
	}
	t.Log(err)
	if took < timeout/2 || took > 5*timeout {
		t.Errorf("took %v with timeout %v", took, timeout)
	}
	if len(f.reqs) < 2 {
		t.Errorf("%d requests, want retransmissions", len(f.reqs))
	}
	checkErrText(t, err)
}

// testCancel: cancelling the context ends the call with its error.
func testCancel(t *testing.T, mk newGateway) {
	f := startFakeCtl(t, func([]byte, netip.AddrPort) [][]byte { return nil })
	const timeout = 20 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- mapLoopback(ctx, mk(f.port(), timeout)) }()
	f.next(t)
	cancel()
	err := <-done
	if took := time.Since(start); took > timeout/2 {
		t.Errorf("took %v", took)
	}
	var me *MapError
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrNoGateway) || !errors.As(err, &me) {
		t.Errorf("err %v, want context.Canceled in a MapError", err)
	}
	t.Log(err)
	checkErrText(t, err)
	if err := mapLoopback(ctx, mk(f.port(), timeout)); !errors.Is(err, context.Canceled) {
		t.Errorf("with a cancelled context: %v", err)
	}
}

// testCtxDeadline: ctx's deadline, sooner than the timeout, bounds the
// call: ErrNoGateway and context.DeadlineExceeded.
func testCtxDeadline(t *testing.T, mk newGateway) {
	t.Parallel()
	f := startFakeCtl(t, func([]byte, netip.AddrPort) [][]byte { return nil })
	const timeout = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := mapLoopback(ctx, mk(f.port(), timeout))
	if took := time.Since(start); took > timeout/2 {
		t.Errorf("took %v", took)
	}
	if !errors.Is(err, ErrNoGateway) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want ErrNoGateway and DeadlineExceeded", err)
	}
	t.Log(err)
	checkErrText(t, err)
}
