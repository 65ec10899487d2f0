package reach

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// pmpSeeds are NAT-PMP responses of every kind, and some that are not.
func pmpSeeds() [][]byte {
	addr := make([]byte, pmpAddrLen)
	addr[1] = pmpReply
	copy(addr[8:], []byte{203, 0, 113, 7})
	return [][]byte{
		addr,
		pmpMapAnswer(pmpOpUDP, 5000, 6000, 3600),
		pmpMapAnswer(pmpOpTCP, 5000, 0, 0),
		pmpError(pmpOpAddr, 3),
		pmpError(pmpOpUDP, 1),
		{0, 0},
		{},
	}
}

// checkPMP parses b both ways and checks what the parsers promise.
func checkPMP(t *testing.T, b []byte) {
	if r, ok := parsePMPAddr(b); ok {
		if len(b) < pmpErrLen || b[0] != 0 || b[1] != pmpReply+pmpOpAddr {
			t.Fatalf("parsePMPAddr(%x) took another opcode's", b)
		}
		if r.result == 0 && (len(b) < pmpAddrLen || !r.ip.Is4() || r.ip != netip.AddrFrom4([4]byte(b[8:12]))) {
			t.Fatalf("parsePMPAddr(%x) = %+v", b, r)
		}
		if r.result != 0 && len(b) != pmpErrLen && len(b) < pmpAddrLen {
			t.Fatalf("parsePMPAddr(%x) took a cut error", b)
		}
	}
	if r, ok := parsePMPMap(b); ok {
		if len(b) < pmpErrLen || b[0] != 0 || r.op != b[1] || r.op != pmpReply+pmpOpUDP && r.op != pmpReply+pmpOpTCP {
			t.Fatalf("parsePMPMap(%x) took another opcode's", b)
		}
		if r.result == 0 && len(b) < pmpMapLen || r.result != 0 && len(b) != pmpErrLen && len(b) < pmpMapLen {
			t.Fatalf("parsePMPMap(%x) took a short response", b)
		}
		if len(b) >= pmpMapLen && (r.internal != binary.BigEndian.Uint16(b[8:]) || r.lifetime != binary.BigEndian.Uint32(b[12:])) {
			t.Fatalf("parsePMPMap(%x) = %+v", b, r)
		}
	}
}

// pcpSeed is a MAP success response.
func pcpSeed() []byte {
	q := pcpQuery{nonce: [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, proto: 17, internal: 5000, external: 6000, lifetime: 3600}
	return pcpAnswer(q.request(ctlLoopback), 0)
}

func pcpSeeds() [][]byte {
	ok := pcpSeed()
	v1 := make([]byte, pcpHeaderLen)
	v1[0], v1[1], v1[3] = 1, pcpReply|pcpOpMap, pcpUnsuppVersion
	q := pcpQuery{proto: 6, internal: 1, lifetime: 1}
	return [][]byte{
		ok,
		append(bytes.Clone(ok), 0x80, 0, 0, 4, 1, 2, 3, 4), // with an option
		pcpAnswer(q.request(ctlLoopback), 8),
		pcpAnswer(q.request(ctlLoopback), 3)[:pcpHeaderLen],
		pmpError(pcpOpMap, 1),
		v1,
		ok[:pcpMapLen-1],
		{},
	}
}

// checkPCP parses b and checks what the parser promises.
func checkPCP(t *testing.T, b []byte) {
	r, ok := parsePCPMap(b)
	if !ok {
		return
	}
	if len(b) < 4 || b[1] != pcpReply|pcpOpMap || r.version != b[0] {
		t.Fatalf("parsePCPMap(%x) took another opcode's", b)
	}
	if r.version != pcpVersion && r.result != pcpUnsuppVersion {
		t.Fatalf("parsePCPMap(%x): version %d with result %d", b, r.version, r.result)
	}
	if r.result == 0 && !r.hasMap || r.hasMap && len(b) < pcpMapLen {
		t.Fatalf("parsePCPMap(%x): success without the MAP data", b)
	}
	if r.hasMap {
		ip := netip.AddrFrom16([16]byte(b[44:60]))
		if r.nonce != [12]byte(b[24:36]) || r.internal != binary.BigEndian.Uint16(b[40:]) || r.extIP != ip.Unmap() || r.extIP.Is4In6() {
			t.Fatalf("parsePCPMap(%x) = %+v", b, r)
		}
	}
}

// TestPMPParseCases keeps inputs worth keeping, fuzzers' finds among them.
func TestPMPParseCases(t *testing.T) {
	for _, b := range pmpSeeds() {
		checkPMP(t, b)
	}
	for _, b := range [][]byte{
		pmpError(pmpOpUDP, 2)[:7],
		append(pmpError(pmpOpUDP, 2), 0), // 9 bytes: neither form
		make([]byte, 1500),
	} {
		checkPMP(t, b)
		if _, ok := parsePMPMap(b); ok {
			t.Errorf("parsePMPMap(%x) took it", b)
		}
	}
}

func TestPCPParseCases(t *testing.T) {
	for _, b := range pcpSeeds() {
		checkPCP(t, b)
	}
	ok := pcpSeed()
	for _, c := range []struct {
		b    []byte
		want bool
	}{
		{ok, true},
		{append(bytes.Clone(ok), 0x80, 0, 0, 40), true}, // a truncated option is not read
		{ok[:pcpMapLen-1], false},
		{ok[:pcpHeaderLen], false}, // a success needs the MAP data
		{pmpError(pcpOpMap, 1)[:7], false},
		{[]byte{0, pcpReply | pcpOpMap, 0, 1, 0, 0, 0, 0}, true},
		{[]byte{3, pcpReply | pcpOpMap, 0, 1}, false},
	} {
		checkPCP(t, c.b)
		if _, got := parsePCPMap(c.b); got != c.want {
			t.Errorf("parsePCPMap(%x) ok = %v, want %v", c.b, got, c.want)
		}
	}
}

func FuzzPMPResponse(f *testing.F) {
	for _, b := range pmpSeeds() {
		f.Add(b)
	}
	f.Fuzz(checkPMP)
}

func FuzzPCPResponse(f *testing.F) {
	for _, b := range pcpSeeds() {
		f.Add(b)
	}
	f.Fuzz(checkPCP)
}
