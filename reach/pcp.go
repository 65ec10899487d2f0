package reach

// PCP (RFC 6887), its MAP opcode only, over the transport in pmp.go.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/p2pd/p2pd"
)

// PCP constants (RFC 6887 §7, §11.1, §19.4).
const (
	pcpVersion       = 2
	pcpOpMap         = 1
	pcpReply         = 0x80 // the R bit: a response
	pcpHeaderLen     = 24
	pcpMapLen        = 60 // the header and the MAP opcode data
	pcpUnsuppVersion = 1
)

// pcpClient is a PCP client of one gateway. It keeps no state between
// calls: a mapping's nonce travels in its lease.
type pcpClient struct{ ctlTransport }

var _ gateway = (*pcpClient)(nil)

func newPCP(gw, local netip.Addr, timeout time.Duration) *pcpClient {
	return &pcpClient{ctlTransport{gw: gw.Unmap(), local: local.Unmap(), port: ctlPort, timeout: timeout}}
}

func (*pcpClient) Protocol() string { return "pcp" }

// Map asks for a mapping of internal's port to external port want (0: any),
// for lifetime. Renewing prev reuses its nonce and suggests its external
// address, and its port when want is 0.
func (p *pcpClient) Map(ctx context.Context, proto p2pd.Proto, internal netip.AddrPort, want uint16, lifetime time.Duration, prev *lease) (lease, error) {
	q := pcpQuery{internal: internal.Port(), external: want}
	var err error
	if q.proto, err = pcpProtocol(proto, internal.Port()); err != nil {
		return lease{}, p.fail(err)
	}
	if q.lifetime, err = leaseSeconds(lifetime); err != nil {
		return lease{}, p.fail(err)
	}
	if prev != nil && prev.Protocol == p.Protocol() {
		q.nonce = prev.nonce
		q.suggest = prev.External.Addr()
		if want == 0 {
			q.external = prev.External.Port()
		}
	} else {
		rand.Read(q.nonce[:])
	}
	r, granted, err := p.ask(ctx, q)
	if err != nil {
		return lease{}, err
	}
	if r.external == 0 || r.lifetime == 0 || !r.extIP.IsValid() || r.extIP.IsUnspecified() {
		return lease{}, p.fail(fmt.Errorf("%w: granted %v for %d s", ErrRefused, netip.AddrPortFrom(r.extIP, r.external), r.lifetime))
	}
	return lease{
		Protocol: p.Protocol(),
		Proto:    proto,
		Internal: internal,
		External: netip.AddrPortFrom(r.extIP, r.external),
		Lifetime: time.Duration(r.lifetime) * time.Second,
		Granted:  granted,
		Epoch:    r.epoch,
		nonce:    q.nonce,
	}, nil
}

// Unmap deletes l: lifetime 0 and l's nonce (RFC 6887 §15).
func (p *pcpClient) Unmap(ctx context.Context, l lease) error {
	q := pcpQuery{nonce: l.nonce, internal: l.Internal.Port(), external: l.External.Port(), suggest: l.External.Addr()}
	var err error
	if q.proto, err = pcpProtocol(l.Proto, l.Internal.Port()); err != nil {
		return p.fail(err)
	}
	_, _, err = p.ask(ctx, q)
	return err
}

// ask runs q and returns the success response and when it came.
func (p *pcpClient) ask(ctx context.Context, q pcpQuery) (pcpResp, time.Time, error) {
	var r pcpResp
	var at time.Time
	s, err := p.open(ctx)
	if err != nil {
		return r, at, p.fail(err)
	}
	defer s.close()
	err = s.roundTrip(q.request(s.localAddr()), func(b []byte) (bool, error) {
		m, ok := parsePCPMap(b)
		if !ok || !q.matches(m) {
			return false, nil
		}
		r, at = m, time.Now()
		return true, nil
	})
	if err != nil {
		return r, at, p.fail(err)
	}
	if r.result != 0 {
		return r, at, &MapError{Protocol: p.Protocol(), Code: int(r.result), Err: fmt.Errorf("%w: %s", ErrRefused, pcpResult(r))}
	}
	return r, at, nil
}

func (p *pcpClient) fail(err error) error { return &MapError{Protocol: p.Protocol(), Err: err} }

// pcpQuery is a MAP request.
type pcpQuery struct {
	nonce    [12]byte
	proto    byte // IP protocol number
	internal uint16
	external uint16     // suggested; 0: any
	suggest  netip.Addr // suggested external address; invalid: any
	lifetime uint32     // 0: delete
}

// request encodes q from the client address (RFC 6887 §7.1, §11.1).
func (q *pcpQuery) request(client netip.Addr) []byte {
	b := make([]byte, pcpMapLen)
	b[0] = pcpVersion
	b[1] = pcpOpMap
	binary.BigEndian.PutUint32(b[4:], q.lifetime)
	c := client.As16() // IPv4 as IPv4-mapped IPv6
	copy(b[8:24], c[:])
	copy(b[24:36], q.nonce[:])
	b[36] = q.proto
	binary.BigEndian.PutUint16(b[40:], q.internal)
	binary.BigEndian.PutUint16(b[42:], q.external)
	ext := q.suggest
	if !ext.IsValid() {
		// No preference: all zeros, in the client's family (§11.1).
		ext = netip.IPv4Unspecified()
		if client.Is6() {
			ext = netip.IPv6Unspecified()
		}
	}
	e := ext.As16()
	copy(b[44:60], e[:])
	return b
}

// matches reports whether r answers q: a response with the MAP data must
// carry q's nonce, protocol and internal port (§11.3). Errors may come as
// the bare header.
func (q *pcpQuery) matches(r pcpResp) bool {
	return !r.hasMap || r.nonce == q.nonce && r.proto == q.proto && r.internal == q.internal
}

func pcpProtocol(proto p2pd.Proto, internal uint16) (byte, error) {
	if internal == 0 {
		return 0, errors.New("internal port 0") // with lifetime 0: delete every mapping
	}
	switch proto {
	case p2pd.TCP:
		return 6, nil
	case p2pd.UDP:
		return 17, nil
	}
	return 0, fmt.Errorf("no IP protocol number for %v", proto)
}

// pcpResult names r's result code (RFC 6887 §7.4).
func pcpResult(r pcpResp) string {
	switch r.result {
	case 1:
		if r.version == 0 {
			return "UNSUPP_VERSION (the gateway speaks NAT-PMP only)"
		}
		if r.version != pcpVersion {
			return fmt.Sprintf("UNSUPP_VERSION (the gateway speaks PCP version %d)", r.version)
		}
		return "UNSUPP_VERSION"
	case 2:
		return "NOT_AUTHORIZED"
	case 3:
		return "MALFORMED_REQUEST"
	case 4:
		return "UNSUPP_OPCODE"
	case 5:
		return "UNSUPP_OPTION"
	case 6:
		return "MALFORMED_OPTION"
	case 7:
		return "NETWORK_FAILURE"
	case 8:
		return "NO_RESOURCES"
	case 9:
		return "UNSUPP_PROTOCOL"
	case 10:
		return "USER_EX_QUOTA"
	case 11:
		return "CANNOT_PROVIDE_EXTERNAL"
	case 12:
		return "ADDRESS_MISMATCH"
	case 13:
		return "EXCESSIVE_REMOTE_PEERS"
	}
	return "unknown result"
}

// pcpResp is a response to a MAP request.
type pcpResp struct {
	version  byte // the server's: 0 for a NAT-PMP server
	result   byte
	lifetime uint32
	epoch    uint32
	hasMap   bool // the MAP data below is there
	nonce    [12]byte
	proto    byte
	internal uint16
	external uint16
	extIP    netip.Addr // IPv4 unmapped
}

// parsePCPMap parses a response to a MAP request; ok is false for anything
// else. A success has the MAP data; an error may be the bare header. Other
// versions' servers answer with UNSUPP_VERSION: a NAT-PMP server's
// (version 0, RFC 6886 §3.5) is 8 bytes, a PCP server's at least the
// header. Options after the MAP data are not read.
func parsePCPMap(b []byte) (r pcpResp, ok bool) {
	if len(b) < 4 || b[1] != pcpReply|pcpOpMap {
		return r, false
	}
	r.version = b[0]
	switch {
	case r.version == 0:
		r.result = pcpUnsuppVersion
		return r, len(b) >= pmpErrLen
	case r.version != pcpVersion:
		r.result = pcpUnsuppVersion
		return r, len(b) >= pcpHeaderLen && b[3] == pcpUnsuppVersion
	case len(b) < pcpHeaderLen:
		return r, false
	}
	r.result = b[3]
	r.lifetime = binary.BigEndian.Uint32(b[4:])
	r.epoch = binary.BigEndian.Uint32(b[8:])
	if len(b) < pcpMapLen {
		return r, r.result != 0 && len(b) == pcpHeaderLen // an error may be the bare header
	}
	r.hasMap = true
	r.nonce = [12]byte(b[24:36])
	r.proto = b[36]
	r.internal = binary.BigEndian.Uint16(b[40:])
	r.external = binary.BigEndian.Uint16(b[42:])
	r.extIP = netip.AddrFrom16([16]byte(b[44:60])).Unmap()
	return r, true
}
