package reach

// UPnP IPv6 pinholes (WANIPv6FirewallControl:1): a listener on a global
// IPv6 address is opened in the gateway's firewall at that same address
// and port. The SOAP requests go, like the IPv4 ones, over IPv4 from the
// LAN address to the host that answered SSDP; those the IGD refuses so
// (606: miniupnpd's rule) go again over IPv6 (see pinholeSOAP).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/errtext"
)

// WANIPv6FirewallControl:1 (§2.4, §2.5).
const (
	upnpMaxPinholeIDs      = 4096  // UniqueIDs remembered (upnpClient.pinholes)
	upnpPinholeMaxLease    = 86400 // LeaseTime: 1 s to 1 day
	upnpInvalidArgs        = 402   // miniupnpd-nftables' answer for an unknown UniqueID
	upnpNotAuthorized      = 606   // not the caller's pinhole (miniupnpd: not the sender's address)
	upnpPinholeNoSuchEntry = 704   // UpdatePinhole, DeletePinhole: no such pinhole
	upnpIPProtoTCP         = 6     // Protocol: the IP protocol number
	upnpIPProtoUDP         = 17
)

// firewallConn is an IGD's IPv6 firewall control: goupnp's
// WANIPv6FirewallControl1.
type firewallConn interface {
	upnpService
	GetFirewallStatusCtx(ctx context.Context) (enabled bool, inboundAllowed bool, err error)
	AddPinholeCtx(ctx context.Context, remoteHost string, remotePort uint16, internalClient string, internalPort uint16, proto uint16, lease uint32) (uint16, error)
	UpdatePinholeCtx(ctx context.Context, id uint16, lease uint32) error
	DeletePinholeCtx(ctx context.Context, id uint16) error
}

var _ firewallConn = (*internetgateway2.WANIPv6FirewallControl1)(nil)

// upnpNoService is the error of an IGD whose description lacks a service
// p2pd needs. It is ErrNoGateway for errors.Is, but Map does not search for
// the IGD again for it: the IGD answered.
type upnpNoService string

func (e upnpNoService) Error() string        { return "the gateway offers no " + string(e) }
func (e upnpNoService) Is(target error) bool { return target == ErrNoGateway }

// upnpLacks reports whether err is an upnpNoService.
func upnpLacks(err error) bool {
	var ns upnpNoService
	return errors.As(err, &ns)
}

const upnpNoFirewall = upnpNoService("IPv6 firewall control (WANIPv6FirewallControl:1)")

// firewallOf returns the first IPv6 firewall control of root, a
// description read at loc, whose control URL is on loc's host.
func (c *upnpClient) firewallOf(root *goupnp.RootDevice, loc *url.URL) firewallConn {
	fws, err := internetgateway2.NewWANIPv6FirewallControl1ClientsFromRootDevice(root, loc)
	if err != nil {
		return nil
	}
	for _, fw := range fws {
		if c.adopt(&fw.ServiceClient, loc) {
			return fw
		}
	}
	return nil
}

// pinholeKey is what a pinhole opens: a protocol and internal address.
type pinholeKey struct {
	proto p2pd.Proto
	in    netip.AddrPort
}

// pinholeOwner is the pinhole fw last gave UniqueID id for, if c knows.
func (c *upnpClient) pinholeOwner(fw firewallConn, id uint16) (pinholeKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.pinholes[id]
	return k, ok && c.fw == fw
}

// notePinhole records that id names k's pinhole on fw.
func (c *upnpClient) notePinhole(fw firewallConn, id uint16, k pinholeKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fw != fw {
		return
	}
	if c.pinholes == nil || len(c.pinholes) >= upnpMaxPinholeIDs {
		c.pinholes = make(map[uint16]pinholeKey)
	}
	c.pinholes[id] = k
}

// forgetPinhole forgets that id names k's pinhole.
func (c *upnpClient) forgetPinhole(id uint16, k pinholeKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pinholes[id] == k {
		delete(c.pinholes, id)
	}
}

// pinholeOnce opens (or renews, when prev is the pinhole's lease) a pinhole
// to internal, a global IPv6 address, from any remote host and port, for
// lifetime (at most a day). A pinhole keeps the address and port: the
// lease's External is its Internal, and want is not used. A renewal the
// IGD refuses (704: it restarted and forgot) opens the pinhole again: an
// AddPinhole of a pinhole the IGD has renews it (§2.5.4). So does one
// whose UniqueID the IGD has given another pinhole since (a restarted IGD
// numbers from 1 again): UpdatePinhole would renew that one. Errors are
// *MapError: ErrNoGateway when the IGD offers no IPv6 firewall control,
// ErrRefused when its firewall is off or allows no inbound pinhole (no
// pinhole is needed, or none can be had), or it refused.
func (c *upnpClient) pinholeOnce(ctx context.Context, proto p2pd.Proto, internal netip.AddrPort, _ uint16, lifetime time.Duration, prev *lease) (lease, error) {
	num, err := pinholeProto(proto)
	if err != nil {
		return lease{}, err
	}
	in, err := pinholeAddr(internal)
	if err != nil {
		return lease{}, err
	}
	if lifetime <= 0 {
		return lease{}, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: lifetime %v", p2pd.ErrInvalid, lifetime)}
	}
	c.mu.Lock()
	fw := c.fw
	c.mu.Unlock()
	if fw == nil {
		return lease{}, &MapError{Protocol: "upnp", Err: upnpNoFirewall}
	}
	if err := c.firewallOpen(ctx, fw); err != nil {
		return lease{}, err
	}
	secs := min(upnpLeaseSeconds(lifetime), upnpPinholeMaxLease)
	k := pinholeKey{proto, in}
	var id uint16
	renewed := false
	renew := prev != nil && prev.pinhole && prev.Protocol == "upnp" && prev.Proto == proto && prev.Internal == in
	if renew {
		owner, ok := c.pinholeOwner(fw, prev.pinholeID)
		renew = !ok || owner == k // else its ID is another pinhole's now
	}
	if renew {
		err := c.pinholeSOAP(ctx, fw, in.Addr(), func(ctx context.Context, fw firewallConn) error {
			return fw.UpdatePinholeCtx(ctx, prev.pinholeID, secs)
		})
		switch {
		case err == nil:
			id, renewed = prev.pinholeID, true
		case !errors.Is(err, ErrRefused):
			return lease{}, err
		}
		// 704, or what miniupnpd-nftables answers for an ID it lost: 402
		// (or 606).
	}
	if !renewed {
		// RemoteHost "" and RemotePort 0: any. (miniupnpd takes "" or "*"
		// for any host; "::" would be a rule for source :: alone.)
		err := c.pinholeSOAP(ctx, fw, in.Addr(), func(ctx context.Context, fw firewallConn) error {
			var err error
			id, err = fw.AddPinholeCtx(ctx, "", 0, in.Addr().String(), in.Port(), num, secs)
			return err
		})
		if err != nil {
			return lease{}, err
		}
	}
	c.notePinhole(fw, id, k)
	return lease{
		Protocol:  "upnp",
		Proto:     proto,
		Internal:  in,
		External:  in,
		Lifetime:  time.Duration(secs) * time.Second,
		Granted:   time.Now(),
		pinholeID: id,
		pinhole:   true,
	}, nil
}

// firewallOpen says, from fw's GetFirewallStatus (asked once per IGD
// found), whether fw opens pinholes at all. A fault or an odd answer is no
// verdict: AddPinhole will tell.
func (c *upnpClient) firewallOpen(ctx context.Context, fw firewallConn) error {
	c.mu.Lock()
	checked, verdict := c.fw == fw && c.fwChecked, c.fwErr
	c.mu.Unlock()
	if checked {
		return verdict
	}
	var enabled, inbound bool
	err := c.soap(ctx, fw, func(ctx context.Context) error {
		var err error
		enabled, inbound, err = fw.GetFirewallStatusCtx(ctx)
		return err
	})
	switch {
	case err == nil && !enabled:
		verdict = &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: its IPv6 firewall is off: inbound IPv6 needs no pinhole", ErrRefused)}
	case err == nil && !inbound:
		verdict = &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: its IPv6 firewall allows no inbound pinhole", ErrRefused)}
	case err == nil || errors.Is(err, ErrRefused):
		verdict = nil
	default:
		return err // not reached, or canceled: asked again next time
	}
	c.mu.Lock()
	if c.fw == fw {
		c.fwChecked, c.fwErr = true, verdict
	}
	c.mu.Unlock()
	return verdict
}

// unpinhole deletes l's pinhole. One the IGD does not have is gone: 704,
// or miniupnpd-nftables' 402 (its lookup of an unknown ID finds an empty
// address, which fails as an argument), or an ID the IGD gave another
// pinhole since (which is not deleted).
func (c *upnpClient) unpinhole(ctx context.Context, l lease) error {
	c.mu.Lock()
	fw := c.fw
	c.mu.Unlock()
	if fw == nil {
		return &MapError{Protocol: "upnp", Err: upnpNoFirewall}
	}
	k := pinholeKey{l.Proto, l.Internal}
	if owner, ok := c.pinholeOwner(fw, l.pinholeID); ok && owner != k {
		return nil
	}
	err := c.pinholeSOAP(ctx, fw, l.Internal.Addr(), func(ctx context.Context, fw firewallConn) error {
		return fw.DeletePinholeCtx(ctx, l.pinholeID)
	})
	if code := upnpCode(err); err == nil || code == upnpPinholeNoSuchEntry || code == upnpInvalidArgs {
		c.forgetPinhole(l.pinholeID, k)
		return nil
	}
	return err
}

// upnpRoute6 is how a pinhole request for in goes over IPv6: from in
// itself, to the IPv6 default router (zoned, if link-local). Tests replace
// it.
var upnpRoute6 = func(in netip.Addr) (from, to netip.Addr, err error) {
	gw, index, err := defaultGateway(p2pd.IPv6)
	if err != nil {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("no IPv6 default router: %w", err)
	}
	if gw.IsLinkLocalUnicast() && gw.Zone() == "" && index > 0 {
		gw = gw.WithZone(strconv.Itoa(index))
	}
	return in, gw, nil
}

// pinholeSOAP runs call, an action on a pinhole for in, with fw. miniupnpd
// (2.3.1, and since) acts only on pinholes for the address a request comes
// from, over IPv6, and answers any other with 606. After a 606 over IPv4,
// call is asked again from in over IPv6, of the IPv6 default router, at
// fw's port and path: on a home LAN that is the IGD, which SSDP found over
// IPv4 only.
func (c *upnpClient) pinholeSOAP(ctx context.Context, fw firewallConn, in netip.Addr, call func(context.Context, firewallConn) error) error {
	err := c.soap(ctx, fw, func(ctx context.Context) error { return call(ctx, fw) })
	var me *MapError
	if upnpCode(err) != upnpNotAuthorized || !errors.As(err, &me) || ctx.Err() != nil {
		return err
	}
	from, to, err6 := upnpRoute6(in)
	if err6 == nil {
		fw6 := firewallAt(fw, to)
		d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
		err6 = c.soapFrom(ctx, d, fw6, func(ctx context.Context) error { return call(ctx, fw6) })
		if err6 == nil || upnpCode(err6) != 0 || ctx.Err() != nil {
			return err6 // the IGD answered over IPv6, or time is up
		}
		var me6 *MapError
		if errors.As(err6, &me6) {
			err6 = me6.Err
		}
	}
	return &MapError{Protocol: "upnp", Code: me.Code, Err: fmt.Errorf("%w (over IPv4; over IPv6 from %v: %s)", me.Err, in, errtext.TrimIn("reach", err6))}
}

// firewallAt is fw with its control URL on host to: the same port and path.
func firewallAt(fw firewallConn, to netip.Addr) *internetgateway2.WANIPv6FirewallControl1 {
	sc := *fw.GetServiceClient()
	soapc := *sc.SOAPClient
	port := soapc.EndpointURL.Port()
	if port == "" {
		port = "80"
	}
	soapc.EndpointURL.Host = net.JoinHostPort(to.String(), port)
	sc.SOAPClient = &soapc
	return &internetgateway2.WANIPv6FirewallControl1{ServiceClient: sc}
}

// pinholeAddr is internal without its zone, if a pinhole can open it: a
// global unicast IPv6 address (not link-local, unique local, loopback,
// multicast or unspecified) and a port.
func pinholeAddr(internal netip.AddrPort) (netip.AddrPort, error) {
	a := internal.Addr().WithZone("")
	if !a.IsGlobalUnicast() || a.IsPrivate() {
		return netip.AddrPort{}, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: a pinhole needs a global IPv6 address, not %v", p2pd.ErrInvalid, internal.Addr())}
	}
	if internal.Port() == 0 {
		return netip.AddrPort{}, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: internal port 0", p2pd.ErrBadPort)}
	}
	return netip.AddrPortFrom(a, internal.Port()), nil
}

// pinholeProto is p's IP protocol number.
func pinholeProto(p p2pd.Proto) (uint16, error) {
	if _, err := upnpProto(p); err != nil {
		return 0, err
	}
	if p == p2pd.UDP {
		return upnpIPProtoUDP, nil
	}
	return upnpIPProtoTCP, nil
}
