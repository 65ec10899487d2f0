package reach

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
)

func testPCP(port uint16, timeout time.Duration) *pcpClient {
	p := newPCP(ctlLoopback, ctlLoopback, timeout)
	p.port = port
	return p
}

const pcpEpoch = 2000

// pcpAnswer answers a MAP request with result like a PCP gateway with
// external address ctlExtIP, granting the suggested port, or 40001, for
// the requested lifetime capped at an hour. Like miniupnpd, it copies the
// request into the response.
func pcpAnswer(req []byte, result byte) []byte {
	if len(req) < pcpMapLen || req[0] != pcpVersion || req[1] != pcpOpMap {
		return nil
	}
	b := bytes.Clone(req[:pcpMapLen])
	b[1] |= pcpReply
	b[3] = result
	life := min(binary.BigEndian.Uint32(req[4:]), 3600)
	if result != 0 {
		life = 30
	}
	binary.BigEndian.PutUint32(b[4:], life)
	binary.BigEndian.PutUint32(b[8:], pcpEpoch)
	clear(b[12:24])
	if result == 0 {
		ext := binary.BigEndian.Uint16(req[42:])
		if ext == 0 {
			ext = 40001
		}
		if life == 0 {
			ext = 0
		}
		binary.BigEndian.PutUint16(b[42:], ext)
		ip := ctlExtIP.As16()
		copy(b[44:], ip[:])
	}
	return b
}

func pcpServer(req []byte, _ netip.AddrPort) [][]byte { return [][]byte{pcpAnswer(req, 0)} }

// pcpReq is a MAP request as the fake got it.
type pcpReq struct {
	lifetime uint32
	client   netip.Addr
	nonce    [12]byte
	proto    byte
	internal uint16
	external uint16
	extIP    netip.Addr
}

func parsePCPReq(t *testing.T, b []byte) pcpReq {
	t.Helper()
	if len(b) != pcpMapLen || b[0] != pcpVersion || b[1] != pcpOpMap || b[2] != 0 || b[3] != 0 ||
		!bytes.Equal(b[37:40], []byte{0, 0, 0}) {
		t.Fatalf("bad MAP request %x", b)
	}
	return pcpReq{
		lifetime: binary.BigEndian.Uint32(b[4:]),
		client:   netip.AddrFrom16([16]byte(b[8:24])),
		nonce:    [12]byte(b[24:36]),
		proto:    b[36],
		internal: binary.BigEndian.Uint16(b[40:]),
		external: binary.BigEndian.Uint16(b[42:]),
		extIP:    netip.AddrFrom16([16]byte(b[44:60])),
	}
}

var pcpAnyIPv4 = netip.MustParseAddr("::ffff:0.0.0.0")

func TestPCPMap(t *testing.T) {
	for _, c := range []struct {
		proto p2pd.Proto
		num   byte
	}{{p2pd.UDP, 17}, {p2pd.TCP, 6}} {
		f := startFakeCtl(t, pcpServer)
		p := testPCP(f.port(), 10*time.Second)
		internal := netip.AddrPortFrom(ctlLoopback, 5000)
		before := time.Now()
		l, err := p.Map(context.Background(), c.proto, internal, 6000, 2*time.Hour+time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := parsePCPReq(t, f.next(t))
		want := lease{Protocol: "pcp", Proto: c.proto, Internal: internal,
			External: netip.AddrPortFrom(ctlExtIP, 6000), Lifetime: time.Hour, Epoch: pcpEpoch, Granted: l.Granted, nonce: r.nonce}
		if l != want {
			t.Errorf("lease %+v, want %+v", l, want)
		}
		if l.Granted.Before(before) || l.Granted.After(time.Now()) {
			t.Errorf("granted at %v, not during the call", l.Granted)
		}
		wantReq := pcpReq{lifetime: 7201, client: netip.MustParseAddr("::ffff:127.0.0.1"), nonce: r.nonce,
			proto: c.num, internal: 5000, external: 6000, extIP: pcpAnyIPv4}
		if r != wantReq {
			t.Errorf("request %+v, want %+v", r, wantReq)
		}
		if r.nonce == ([12]byte{}) {
			t.Error("zero nonce")
		}
	}
}

// TestPCPRenew: a renewal reuses the nonce and suggests the previous
// address and port; a new mapping gets a new nonce.
func TestPCPRenew(t *testing.T) {
	f := startFakeCtl(t, pcpServer)
	p := testPCP(f.port(), 10*time.Second)
	internal := netip.AddrPortFrom(ctlLoopback, 5000)
	ctx := context.Background()
	l, err := p.Map(ctx, p2pd.UDP, internal, 0, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := parsePCPReq(t, f.next(t))
	l2, err := p.Map(ctx, p2pd.UDP, internal, 0, time.Hour, &l)
	if err != nil {
		t.Fatal(err)
	}
	renew := parsePCPReq(t, f.next(t))
	if renew.nonce != first.nonce || l2.nonce != l.nonce {
		t.Errorf("renewal nonce %x, lease's %x, want %x", renew.nonce, l2.nonce, first.nonce)
	}
	if renew.external != 40001 || renew.extIP != netip.MustParseAddr("::ffff:203.0.113.7") {
		t.Errorf("renewal suggests %v port %d", renew.extIP, renew.external)
	}
	if l2.External != l.External {
		t.Errorf("renewed %v, was %v", l2.External, l.External)
	}

	if _, err := p.Map(ctx, p2pd.UDP, internal, 0, time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	if fresh := parsePCPReq(t, f.next(t)); fresh.nonce == first.nonce {
		t.Error("a new mapping reuses a nonce")
	}
	pmpLease := lease{Protocol: "nat-pmp", Proto: p2pd.UDP, Internal: internal, External: l.External}
	if _, err := p.Map(ctx, p2pd.UDP, internal, 0, time.Hour, &pmpLease); err != nil {
		t.Fatal(err)
	}
	if other := parsePCPReq(t, f.next(t)); other.nonce == first.nonce || other.nonce == ([12]byte{}) {
		t.Errorf("renewing a NAT-PMP lease with nonce %x", other.nonce)
	}
}

func TestPCPUnmap(t *testing.T) {
	f := startFakeCtl(t, func(req []byte, _ netip.AddrPort) [][]byte {
		// Like miniupnpd: only the mapping's nonce may delete it.
		if !bytes.Equal(req[24:36], bytes.Repeat([]byte{7}, 12)) {
			return [][]byte{pcpAnswer(req, 2)}
		}
		return [][]byte{pcpAnswer(req, 0)}
	})
	p := testPCP(f.port(), 10*time.Second)
	l := lease{Protocol: "pcp", Proto: p2pd.TCP, Internal: netip.AddrPortFrom(ctlLoopback, 5000), External: netip.AddrPortFrom(ctlExtIP, 6000)}
	l.nonce = [12]byte(bytes.Repeat([]byte{7}, 12))
	if err := p.Unmap(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	r := parsePCPReq(t, f.next(t))
	if r.lifetime != 0 || r.nonce != l.nonce || r.proto != 6 || r.internal != 5000 {
		t.Errorf("delete request %+v", r)
	}
	l.nonce[0] = 8
	var me *MapError
	if err := p.Unmap(context.Background(), l); !errors.As(err, &me) || me.Code != 2 {
		t.Errorf("delete with another nonce: %v", err)
	}
}

func TestPCPRefused(t *testing.T) {
	for _, c := range []struct {
		code   byte
		name   string
		header bool // the bare 24-byte header
	}{
		{1, "UNSUPP_VERSION", false},
		{2, "NOT_AUTHORIZED", false},
		{3, "MALFORMED_REQUEST", true},
		{8, "NO_RESOURCES", false},
		{11, "CANNOT_PROVIDE_EXTERNAL", false},
		{12, "ADDRESS_MISMATCH", false},
		{200, "unknown result", true},
	} {
		f := startFakeCtl(t, func(req []byte, _ netip.AddrPort) [][]byte {
			b := pcpAnswer(req, c.code)
			if c.header {
				b = b[:pcpHeaderLen]
			}
			return [][]byte{b}
		})
		err := mapLoopbackErr(testPCP(f.port(), 10*time.Second))
		var me *MapError
		if !errors.Is(err, ErrRefused) || !errors.As(err, &me) || me.Code != int(c.code) || me.Protocol != "pcp" {
			t.Errorf("code %d: err %v, want a pcp MapError with the code", c.code, err)
			continue
		}
		if !strings.Contains(err.Error(), c.name) {
			t.Errorf("code %d: %q does not say %q", c.code, err, c.name)
		}
		checkErrText(t, err)
		t.Log(err)
	}
}

func mapLoopbackErr(g gateway) error { return mapLoopback(context.Background(), g) }

// TestPCPOtherVersions: a NAT-PMP server's "unsupported version" and an
// older PCP server's UNSUPP_VERSION are refusals with code 1.
func TestPCPOtherVersions(t *testing.T) {
	v1 := make([]byte, pcpHeaderLen)
	v1[0], v1[1], v1[3] = 1, pcpReply|pcpOpMap, pcpUnsuppVersion
	for _, c := range []struct {
		answer []byte
		says   string
	}{
		{pmpError(pcpOpMap, 1), "NAT-PMP only"},
		{v1, "PCP version 1"},
	} {
		f := startFakeCtl(t, func([]byte, netip.AddrPort) [][]byte { return [][]byte{c.answer} })
		err := mapLoopbackErr(testPCP(f.port(), 10*time.Second))
		var me *MapError
		if !errors.Is(err, ErrRefused) || !errors.As(err, &me) || me.Code != 1 || !strings.Contains(err.Error(), c.says) {
			t.Errorf("answer %x: err %v, want code 1 saying %q", c.answer, err, c.says)
		}
		checkErrText(t, err)
		t.Log(err)
	}
}

func TestPCPGrantedNothing(t *testing.T) {
	f := startFakeCtl(t, func(req []byte, _ netip.AddrPort) [][]byte {
		b := pcpAnswer(req, 0)
		clear(b[44:60]) // the unspecified address
		return [][]byte{b}
	})
	if err := mapLoopbackErr(testPCP(f.port(), 10*time.Second)); !errors.Is(err, ErrRefused) {
		t.Errorf("err %v, want ErrRefused", err)
	}
}

// TestPCPIgnoresJunk: malformed datagrams, and answers to other requests,
// before the answer are ignored.
func TestPCPIgnoresJunk(t *testing.T) {
	f := startFakeCtl(t, func(req []byte, _ netip.AddrPort) [][]byte {
		ans := pcpAnswer(req, 0)
		mod := func(i int, v byte) []byte {
			b := bytes.Clone(ans)
			b[i] = v
			return b
		}
		v1ok := bytes.Clone(ans[:pcpHeaderLen])
		v1ok[0], v1ok[3] = 1, 0
		return [][]byte{
			{},
			{2, pcpReply | pcpOpMap, 0},
			ans[:pcpHeaderLen],                      // a success without the MAP data
			ans[:pcpMapLen-1],                       // cut short
			req,                                     // an echo of the request
			mod(1, pcpReply|2),                      // PEER's
			mod(24, ans[24]^1),                      // another nonce's
			mod(35, ans[35]^0x80),                   // another nonce's
			mod(36, 6),                              // TCP's
			mod(41, ans[41]^1),                      // another internal port's
			pcpAnswer(req, 2)[:pcpMapLen-1],         // an error, cut short
			{0, pcpReply, 0, 0, 0, 0, 0, 0},         // a NAT-PMP address answer
			{0, pcpReply | pcpOpMap, 0, 1},          // a NAT-PMP error, cut short
			v1ok,                                    // version 1 but not UNSUPP_VERSION
			bytes.Repeat([]byte{0x81}, 1500),        // oversized noise
			append(mod(24, ans[24]^1), ans[24:]...), // options do not make it ours
			ans,
		}
	})
	l, err := testPCP(f.port(), 10*time.Second).Map(context.Background(), p2pd.UDP, netip.AddrPortFrom(ctlLoopback, 5000), 6000, time.Hour, nil)
	if err != nil || l.External != netip.AddrPortFrom(ctlExtIP, 6000) {
		t.Errorf("Map = %v, %v", l.External, err)
	}
}

// TestPCPOtherSource: a datagram from another port than the gateway's is
// not taken for the answer.
func TestPCPOtherSource(t *testing.T) {
	f := startFakeCtl(t, func(req []byte, from netip.AddrPort) [][]byte {
		forged := pcpAnswer(req, 0)
		binary.BigEndian.PutUint16(forged[42:], 1)
		sendFrom(t, from, forged)
		return pcpServer(req, from)
	})
	l, err := testPCP(f.port(), 10*time.Second).Map(context.Background(), p2pd.UDP, netip.AddrPortFrom(ctlLoopback, 5000), 6000, time.Hour, nil)
	if err != nil || l.External.Port() != 6000 {
		t.Errorf("Map = %v, %v", l.External, err)
	}
}

func TestPCPNoServer(t *testing.T) {
	testNoServer(t, func(port uint16, timeout time.Duration) gateway { return testPCP(port, timeout) })
}

func TestPCPSilent(t *testing.T) {
	testSilent(t, func(port uint16, timeout time.Duration) gateway { return testPCP(port, timeout) })
}

func TestPCPCancel(t *testing.T) {
	testCancel(t, func(port uint16, timeout time.Duration) gateway { return testPCP(port, timeout) })
}

func TestPCPCtxDeadline(t *testing.T) {
	testCtxDeadline(t, func(port uint16, timeout time.Duration) gateway { return testPCP(port, timeout) })
}
