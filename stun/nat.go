package stun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"

	pion "github.com/pion/stun/v3"
)

// NATMapping is how a NAT maps an internal address and port to external
// ones (RFC 4787, tested as in RFC 5780 §4.3).
type NATMapping uint8

// NAT mapping behaviours.
const (
	MappingUnknown              NATMapping = iota
	MappingNoNAT                           // the server sees the socket's own address: no NAT
	MappingEndpointIndependent             // one external address:port for every destination ("full cone" family)
	MappingAddressDependent                // a new mapping per destination IP
	MappingAddressPortDependent            // a new mapping per destination IP and port ("symmetric")
)

var mappingNames = [...]string{"unknown", "no NAT", "endpoint-independent", "address-dependent", "address and port-dependent"}

func (m NATMapping) String() string {
	if int(m) < len(mappingNames) {
		return mappingNames[m]
	}
	return fmt.Sprintf("NATMapping(%d)", uint8(m))
}

// NATFiltering is which outside packets a NAT (or firewall) lets in to a
// mapping (RFC 4787, tested as in RFC 5780 §4.4).
type NATFiltering uint8

// NAT filtering behaviours.
const (
	FilteringUnknown              NATFiltering = iota
	FilteringEndpointIndependent               // anyone may send to the mapping
	FilteringAddressDependent                  // only IPs the inside has sent to
	FilteringAddressPortDependent              // only IP:ports the inside has sent to
)

var filteringNames = [...]string{"unknown", "endpoint-independent", "address-dependent", "address and port-dependent"}

func (f NATFiltering) String() string {
	if int(f) < len(filteringNames) {
		return filteringNames[f]
	}
	return fmt.Sprintf("NATFiltering(%d)", uint8(f))
}

// NATBehavior is the result of [Resolver.ClassifyNAT].
type NATBehavior struct {
	Local     netip.AddrPort // the socket the tests were sent from
	Mapped    netip.AddrPort // how the server saw it
	Server    netip.AddrPort // the server's primary address
	Other     netip.AddrPort // the server's alternate address (OTHER-ADDRESS)
	Mapping   NATMapping
	Filtering NATFiltering
}

func (b *NATBehavior) String() string {
	return fmt.Sprintf("mapping %v, filtering %v (local %v, mapped %v)", b.Mapping, b.Filtering, b.Local, b.Mapped)
}

// CHANGE-REQUEST flags (RFC 5780 §7.2).
const (
	changeIP   = 0x04
	changePort = 0x02
)

// ClassifyNAT runs the RFC 5780 behaviour discovery tests from nic against
// server ("ip:port" or "host:port"), which must offer an alternate address
// (OTHER-ADDRESS) and honour CHANGE-REQUEST, as coturn does when it listens
// on two addresses. All tests use one socket bound to nic. The filtering
// tests run first, before the socket has sent anything to the alternate
// address, and a test that gets no answer costs one Timeout; the whole
// classification takes at most about three Timeouts.
//
// The Timeout, RTO and Retries of r apply; its cache and Agree do not.
func (r *Resolver) ClassifyNAT(ctx context.Context, nic netip.Addr, server string) (*NATBehavior, error) {
	nic = nic.Unmap()
	fail := func(err error) (*NATBehavior, error) {
		return nil, errtext.Errorf("p2pd: stun: classify NAT from %v with %s: %w", nic, server, err)
	}
	host, port, err := splitServer(server)
	if err != nil {
		return fail(err)
	}
	srvIP, err := netip.ParseAddr(host)
	if err != nil {
		network := "ip4"
		if nic.Is6() {
			network = "ip6"
		}
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, network, host)
		if lerr != nil || len(ips) == 0 {
			return fail(fmt.Errorf("no %s address: %v", p2pd.FamilyOf(nic), lerr))
		}
		srvIP = ips[0]
	}
	srv := netip.AddrPortFrom(srvIP.Unmap(), port)
	if p2pd.FamilyOf(srv.Addr()) != p2pd.FamilyOf(nic) {
		return fail(fmt.Errorf("%w: server %v is not %v", p2pd.ErrFamilyUnsupported, srv, p2pd.FamilyOf(nic)))
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(nic, 0)))
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	b := &NATBehavior{Local: stunUnmap(c.LocalAddr().(*net.UDPAddr).AddrPort()), Server: srv}

	// run is one Binding transaction to `to`, with its own Timeout, whose
	// answer must come from `from`.
	run := func(to, from netip.AddrPort, change byte) (*pion.Message, error) {
		tctx, cancel := context.WithTimeout(ctx, r.timeout())
		defer cancel()
		var add func(*pion.Message)
		if change != 0 {
			add = func(m *pion.Message) { m.Add(pion.AttrChangeRequest, []byte{0, 0, 0, change}) }
		}
		m, _, err := r.socketTransact(tctx, c, to, add, func(src netip.AddrPort) bool { return src == from })
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return m, err
	}

	// Test I: the mapping and the alternate address.
	m, err := run(srv, srv, 0)
	if err != nil {
		return fail(err)
	}
	if b.Mapped, err = mappedAddr(m); err != nil {
		return fail(err)
	}
	var oa pion.OtherAddress
	if oa.GetFrom(m) != nil {
		return fail(ErrNoRFC5780)
	}
	other, ok := netip.AddrFromSlice(oa.IP)
	if !ok || oa.Port <= 0 || oa.Port > 65535 || other.Unmap() == srv.Addr() || p2pd.FamilyOf(other.Unmap()) != p2pd.FamilyOf(nic) {
		return fail(fmt.Errorf("%w: unusable OTHER-ADDRESS %v", ErrNoRFC5780, oa))
	}
	b.Other = netip.AddrPortFrom(other.Unmap(), uint16(oa.Port))

	// Filtering, RFC 5780 §4.4: ask the server to answer from its other IP
	// and port, then from its other port only.
	_, err = run(srv, b.Other, changeIP|changePort)
	switch {
	case err == nil:
		b.Filtering = FilteringEndpointIndependent
	case errors.Is(err, ErrTimeout):
		_, err = run(srv, netip.AddrPortFrom(srv.Addr(), b.Other.Port()), changePort)
		switch {
		case err == nil:
			b.Filtering = FilteringAddressDependent
		case errors.Is(err, ErrTimeout):
			b.Filtering = FilteringAddressPortDependent
		default:
			return fail(err)
		}
	default:
		return fail(err)
	}

	// Mapping, RFC 5780 §4.3.
	if b.Mapped == b.Local {
		b.Mapping = MappingNoNAT
		return b, nil
	}
	m2, err := r.mappedVia(run, netip.AddrPortFrom(b.Other.Addr(), srv.Port()))
	if err != nil {
		return fail(fmt.Errorf("mapping test II: %w", err))
	}
	if m2 == b.Mapped {
		b.Mapping = MappingEndpointIndependent
		return b, nil
	}
	m3, err := r.mappedVia(run, b.Other)
	if err != nil {
		return fail(fmt.Errorf("mapping test III: %w", err))
	}
	if m3 == m2 {
		b.Mapping = MappingAddressDependent
	} else {
		b.Mapping = MappingAddressPortDependent
	}
	return b, nil
}

func (r *Resolver) mappedVia(run func(to, from netip.AddrPort, change byte) (*pion.Message, error), to netip.AddrPort) (netip.AddrPort, error) {
	m, err := run(to, to, 0)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return mappedAddr(m)
}
