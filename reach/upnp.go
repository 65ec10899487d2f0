package reach

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"

	"github.com/p2pd/p2pd"
)

// UPnP IGD error codes (WANIPConnection:2 §2.5) the client acts on.
const (
	upnpNoSuchEntry    = 714 // DeletePortMapping: no such mapping
	upnpConflict       = 718 // ConflictInMappingEntry: the port is someone else's
	upnpSamePort       = 724 // SamePortValuesRequired: external must equal internal
	upnpPermanentOnly  = 725 // OnlyPermanentLeasesSupported: lease must be 0
	upnpConflictTries  = 4   // random ports tried after a conflict
	upnpMaxServices    = 4   // WAN connection services of a description tried
	upnpMaxLease       = 604800
	upnpMaxBody        = 256 << 10
	upnpMaxHeader      = 16 << 10
	upnpExtMaxAge      = time.Minute // how long GetExternalIPAddress's answer is reused
	upnpDescription    = "p2pd"
	upnpMaxErrorLength = 120
)

// upnpService is one SOAP service of an IGD, as goupnp's clients are.
type upnpService interface {
	GetServiceClient() *goupnp.ServiceClient
}

// wanConn is one WAN connection service of an IGD: goupnp's
// WANIPConnection2, WANIPConnection1 or WANPPPConnection1.
type wanConn interface {
	upnpService
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	AddPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string, intPort uint16, intClient string, enabled bool, desc string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) error
}

// anyPortConn is a WANIPConnection:2, which can pick a free port itself.
type anyPortConn interface {
	AddAnyPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string, intPort uint16, intClient string, enabled bool, desc string, lease uint32) (uint16, error)
}

// upnpClient maps IPv4 ports with UPnP IGD (WANIPConnection:2 or :1, or
// WANPPPConnection:1), and opens IPv6 pinholes with its
// WANIPv6FirewallControl:1 (upnp_pinhole.go), on the gateway found from one
// IPv4 LAN address.
type upnpClient struct {
	local   netip.Addr    // the IPv4 LAN address: SSDP, HTTP and IPv4 mappings use it
	timeout time.Duration // bounds each SSDP search and each HTTP exchange
	dialer  *net.Dialer   // from local
	http    *http.Client  // over the connection each exchange dials

	mu        sync.Mutex
	conn      wanConn               // nil: the IGD has none (it offers pinholes only)
	fw        firewallConn          // nil: the IGD offers no IPv6 pinholes
	fwChecked bool                  // fw told its status (GetFirewallStatus) ...
	fwErr     error                 // ... and this is why it opens no pinhole (nil: it may)
	pinholes  map[uint16]pinholeKey // the pinhole fw last gave each UniqueID for
	loc       *url.URL              // the device description conn and fw came from
	ext       netip.Addr            // the last external address, read at extAt
	extAt     time.Time
	permanent bool // the gateway grants only permanent leases (725)
}

var _ gateway = (*upnpClient)(nil)

// newUPnP finds the IGD that answers SSDP from local (an IPv4 LAN address),
// the first of its WAN connection services that tells its external
// address, and its IPv6 firewall control, if it has one. timeout (<= 0:
// 3 s) bounds the search and each HTTP exchange. Errors are *MapError:
// ErrNoGateway when no IGD was found or reached.
func newUPnP(ctx context.Context, local netip.Addr, timeout time.Duration) (*upnpClient, error) {
	local = local.Unmap()
	if !local.Is4() {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: UPnP from %v", p2pd.ErrBadFamily, local)}
	}
	if timeout <= 0 {
		timeout = ssdpTimeout
	}
	c := &upnpClient{local: local, timeout: timeout, http: upnpHTTPClient(),
		dialer: &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))}}
	if err := c.rediscover(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// upnpHTTPClient is an HTTP client for an IGD on the LAN: it sends each
// request on the connection its exchange dialed (see begin), with no proxy,
// no redirect, no kept connection, and bounded answers.
func (c *upnpClient) Protocol() string { return "upnp" }

// rediscover searches for the IGD again and switches to it: a restarted
// router may serve on another HTTP port. The search ends at the first
// answer from the IGD's host, if it had one.
func (c *upnpClient) rediscover(ctx context.Context) error {
	var known netip.Addr
	c.mu.Lock()
	if c.loc != nil {
		known, _ = netip.ParseAddr(c.loc.Hostname())
	}
	c.mu.Unlock()
	locs, err := ssdpDiscover(ctx, c.local, c.timeout, known)
	if err != nil {
		return err
	}
	var last error
	for _, loc := range locs {
		d, err := c.open(ctx, loc)
		if err == nil {
			c.mu.Lock()
			c.conn, c.loc, c.ext, c.extAt = d.conn, loc, d.ext, time.Now()
			c.fw, c.fwChecked, c.fwErr, c.pinholes = d.fw, false, nil, nil
			c.mu.Unlock()
			return nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return last
}

// upnpIGD is what a device description offers p2pd.
type upnpIGD struct {
	conn wanConn      // the WAN connection service for IPv4, or nil
	ext  netip.Addr   // its external address, when it told a usable one
	fw   firewallConn // the IPv6 firewall control, or nil
}

// open reads the device description at loc and returns its first WAN
// connection service that tells an external address, with that address,
// and its IPv6 firewall control. An IGD with a firewall control will do
// without a WAN connection, or with one that answers but tells no usable
// address (a DS-Lite WAN has no public IPv4): Map asks the address again.
func (c *upnpClient) open(ctx context.Context, loc *url.URL) (upnpIGD, error) {
	root, err := c.describe(ctx, loc)
	if err != nil {
		return upnpIGD{}, err
	}
	var conns []wanConn
	if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
		for _, s := range cs {
			if c.adopt(&s.ServiceClient, loc) {
				conns = append(conns, s)
			}
		}
	}
	if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, s := range cs {
			if c.adopt(&s.ServiceClient, loc) {
				conns = append(conns, s)
			}
		}
	}
	if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, s := range cs {
			if c.adopt(&s.ServiceClient, loc) {
				conns = append(conns, s)
			}
		}
	}
	fw := c.firewallOf(root, loc)
	if len(conns) == 0 {
		if fw != nil {
			return upnpIGD{fw: fw}, nil
		}
		return upnpIGD{}, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: %s has no WAN connection service", ErrNoGateway, loc.Redacted())}
	}
	var last error
	for _, conn := range conns[:min(len(conns), upnpMaxServices)] {
		ext, err := c.externalOf(ctx, conn)
		if err == nil {
			return upnpIGD{conn: conn, ext: ext, fw: fw}, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if fw != nil && errors.Is(last, ErrRefused) && ctx.Err() == nil {
		return upnpIGD{conn: conns[0], fw: fw}, nil
	}
	return upnpIGD{}, last
}

// describe fetches and decodes the device description at loc. (Not with
// goupnp's DeviceByURLCtx: its http.DefaultClient neither bounds the answer
// nor dials from local, in the caller's namespace.)
func (c *upnpClient) describe(parent context.Context, loc *url.URL) (*goupnp.RootDevice, error) {
	ctx, ex, end, err := c.begin(parent, loc)
	if err != nil {
		return nil, err
	}
	defer end()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: %w", ErrNoGateway, err)}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, upnpFail(parent, ex, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: device description: HTTP %d", ErrNoGateway, resp.StatusCode)}
	}
	root := new(goupnp.RootDevice)
	d := xml.NewDecoder(resp.Body)
	d.DefaultSpace = goupnp.DeviceXMLNamespace
	d.CharsetReader = goupnp.CharsetReaderDefault
	if err := d.Decode(root); err != nil {
		if e := upnpFail(parent, ex, err); !errors.Is(e, ErrRefused) {
			return nil, e
		}
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: device description: %s", ErrNoGateway, upnpText(err.Error()))}
	}
	base := loc
	if root.URLBaseStr != "" {
		if b, err := url.Parse(root.URLBaseStr); err == nil && b.Scheme == "http" && b.User == nil && upnpSameHost(b, loc) {
			base = b
		}
	}
	root.SetURLBase(base)
	return root, nil
}

// adopt makes s use c's HTTP client, if its control URL is on loc's host:
// a description may not send the control requests elsewhere.
func (c *upnpClient) adopt(s *goupnp.ServiceClient, loc *url.URL) bool {
	if s.SOAPClient == nil {
		return false
	}
	u := &s.SOAPClient.EndpointURL
	if u.Scheme != "http" || u.User != nil || !upnpSameHost(u, loc) {
		return false
	}
	s.SOAPClient.HTTPClient = *c.http
	return true
}

// upnpSameHost reports whether a and b name the same IP address.
func upnpSameHost(a, b *url.URL) bool {
	x, err1 := netip.ParseAddr(a.Hostname())
	y, err2 := netip.ParseAddr(b.Hostname())
	return err1 == nil && err2 == nil && x.Unmap() == y.Unmap()
}

// Map asks the IGD to forward proto's external port (prev's, when
// renewing; else want, or internal's port) to internal. On a conflict it
// lets an IGDv2 choose a port, or tries a few random ones. For an IPv6
// internal address it opens a pinhole instead (see pinholeOnce). It
// retries once, after finding the IGD again, if the IGD could not be
// reached.
func (c *upnpClient) Map(ctx context.Context, proto p2pd.Proto, internal netip.AddrPort, want uint16, lifetime time.Duration, prev *lease) (lease, error) {
	once := c.mapOnce
	if a := internal.Addr(); a.Is6() && !a.Is4In6() {
		once = c.pinholeOnce
	}
	l, err := once(ctx, proto, internal, want, lifetime, prev)
	if err != nil && errors.Is(err, ErrNoGateway) && !upnpLacks(err) && ctx.Err() == nil {
		if c.rediscover(ctx) == nil {
			l, err = once(ctx, proto, internal, want, lifetime, prev)
		}
	}
	return l, err
}

func (c *upnpClient) mapOnce(ctx context.Context, proto p2pd.Proto, internal netip.AddrPort, want uint16, lifetime time.Duration, prev *lease) (lease, error) {
	name, err := upnpProto(proto)
	if err != nil {
		return lease{}, err
	}
	in, err := c.internalAddr(internal)
	if err != nil {
		return lease{}, err
	}
	if lifetime <= 0 {
		return lease{}, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: lifetime %v", p2pd.ErrInvalid, lifetime)}
	}
	c.mu.Lock()
	conn, permanent := c.conn, c.permanent
	c.mu.Unlock()
	if conn == nil {
		return lease{}, &MapError{Protocol: "upnp", Err: upnpNoService("WAN connection service")}
	}
	ext, err := c.external(ctx, conn)
	if err != nil {
		return lease{}, err
	}
	port := want
	if port == 0 {
		port = in.Port()
	}
	if prev != nil && prev.Protocol == "upnp" && prev.Proto == proto && prev.External.Port() != 0 {
		port = prev.External.Port()
	}
	secs := upnpLeaseSeconds(lifetime)
	if permanent {
		secs = 0
	}
	port, secs, err = c.add(ctx, conn, name, port, in, secs)
	if err != nil {
		return lease{}, err
	}
	return lease{
		Protocol: "upnp",
		Proto:    proto,
		Internal: in,
		External: netip.AddrPortFrom(ext, port),
		Lifetime: time.Duration(secs) * time.Second,
		Granted:  time.Now(),
	}, nil
}

// add maps external port to in, or another port after a conflict, and
// returns the port and lease (seconds, 0: permanent) granted.
func (c *upnpClient) add(ctx context.Context, conn wanConn, name string, port uint16, in netip.AddrPort, secs uint32) (uint16, uint32, error) {
	err := c.addPort(ctx, conn, name, port, in, &secs)
	if upnpCode(err) == upnpSamePort && port != in.Port() {
		port = in.Port()
		err = c.addPort(ctx, conn, name, port, in, &secs)
	}
	if upnpCode(err) != upnpConflict {
		return port, secs, err
	}
	if a, ok := conn.(anyPortConn); ok {
		var got uint16
		err = c.soap(ctx, conn, func(ctx context.Context) error {
			var err error
			got, err = a.AddAnyPortMappingCtx(ctx, "", port, name, in.Port(), in.Addr().String(), true, upnpDescription, secs)
			return err
		})
		if err == nil && got != 0 {
			return got, secs, nil
		}
		if err != nil && !errors.Is(err, ErrRefused) {
			return 0, secs, err
		}
	}
	for range upnpConflictTries {
		port = uint16(1024 + rand.IntN(65536-1024))
		err = c.addPort(ctx, conn, name, port, in, &secs)
		if upnpCode(err) != upnpConflict {
			break
		}
	}
	return port, secs, err
}

// addPort is AddPortMapping, again with a permanent lease if the gateway
// grants only those; *secs is then 0.
func (c *upnpClient) addPort(ctx context.Context, conn wanConn, name string, port uint16, in netip.AddrPort, secs *uint32) error {
	call := func(ctx context.Context) error {
		return conn.AddPortMappingCtx(ctx, "", port, name, in.Port(), in.Addr().String(), true, upnpDescription, *secs)
	}
	err := c.soap(ctx, conn, call)
	if *secs != 0 && upnpCode(err) == upnpPermanentOnly {
		*secs = 0
		c.mu.Lock()
		c.permanent = true
		c.mu.Unlock()
		err = c.soap(ctx, conn, call)
	}
	return err
}

// Unmap deletes l's mapping or pinhole. One the IGD no longer has is gone:
// no error.
func (c *upnpClient) Unmap(ctx context.Context, l lease) error {
	ext := l.External.Addr()
	if l.Protocol != "upnp" || l.External.Port() == 0 || !l.pinhole && ext.Is6() && !ext.Is4In6() {
		return &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: not a UPnP lease", p2pd.ErrInvalid)}
	}
	if l.pinhole {
		return c.unpinhole(ctx, l)
	}
	name, err := upnpProto(l.Proto)
	if err != nil {
		return err
	}
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return &MapError{Protocol: "upnp", Err: upnpNoService("WAN connection service")}
	}
	err = c.soap(ctx, conn, func(ctx context.Context) error {
		return conn.DeletePortMappingCtx(ctx, "", l.External.Port(), name)
	})
	if upnpCode(err) == upnpNoSuchEntry {
		return nil
	}
	return err
}

// external returns the external address, reusing one read recently.
func (c *upnpClient) external(ctx context.Context, conn wanConn) (netip.Addr, error) {
	c.mu.Lock()
	ext, at, same := c.ext, c.extAt, c.conn == conn
	c.mu.Unlock()
	if same && ext.IsValid() && time.Since(at) < upnpExtMaxAge {
		return ext, nil
	}
	ext, err := c.externalOf(ctx, conn)
	if err != nil {
		return netip.Addr{}, err
	}
	c.mu.Lock()
	if c.conn == conn {
		c.ext, c.extAt = ext, time.Now()
	}
	c.mu.Unlock()
	return ext, nil
}

// externalOf asks conn its external address. A private or reserved one is
// fine: the gateway may itself be behind NAT, or a test router.
func (c *upnpClient) externalOf(ctx context.Context, conn wanConn) (netip.Addr, error) {
	var s string
	err := c.soap(ctx, conn, func(ctx context.Context) error {
		var err error
		s, err = conn.GetExternalIPAddressCtx(ctx)
		return err
	})
	if err != nil {
		return netip.Addr{}, err
	}
	a, perr := netip.ParseAddr(strings.TrimSpace(s))
	a = a.Unmap()
	if perr != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		return netip.Addr{}, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: %w: %q", ErrRefused, p2pd.ErrExtUnknown, upnpText(s))}
	}
	return a, nil
}

// internalAddr is the LAN address and port to map: internal's, or c's
// address for an unspecified one (secure-mode gateways refuse 0.0.0.0).
func (c *upnpClient) internalAddr(internal netip.AddrPort) (netip.AddrPort, error) {
	a := internal.Addr().Unmap()
	if a.IsUnspecified() {
		a = c.local
	}
	if !a.Is4() {
		return netip.AddrPort{}, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: internal address %v", p2pd.ErrBadFamily, internal)}
	}
	if internal.Port() == 0 {
		return netip.AddrPort{}, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: internal port 0", p2pd.ErrBadPort)}
	}
	return netip.AddrPortFrom(a, internal.Port()), nil
}

func upnpProto(p p2pd.Proto) (string, error) {
	switch p {
	case p2pd.TCP:
		return "TCP", nil
	case p2pd.UDP:
		return "UDP", nil
	}
	return "", &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: protocol %d", p2pd.ErrInvalid, p)}
}

// upnpLeaseSeconds is d in whole seconds, rounded up, at most IGDv2's 7 days.
func upnpLeaseSeconds(d time.Duration) uint32 {
	s := d / time.Second
	if d%time.Second != 0 {
		s++
	}
	return uint32(max(1, min(s, upnpMaxLease)))
}

// upnpCode is the UPnP error code err carries, or 0.
