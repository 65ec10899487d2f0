package reach

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/p2pd/p2pd"
)

// ssdpGroup is where M-SEARCH goes: the SSDP multicast group. Tests point
// it at a unicast responder on loopback.
var ssdpGroup = netip.AddrPortFrom(netip.AddrFrom4([4]byte{239, 255, 255, 250}), 1900)

// ssdpTargets are the search targets (ST) asked for, in order of preference.
var ssdpTargets = [...]string{
	"urn:schemas-upnp-org:device:InternetGatewayDevice:2",
	"urn:schemas-upnp-org:device:InternetGatewayDevice:1",
	"urn:schemas-upnp-org:service:WANIPConnection:2",
	"urn:schemas-upnp-org:service:WANIPConnection:1",
}

const (
	ssdpTimeout   = 3 * time.Second        // default search window: miniupnpd answers after about 2 s (MX 2)
	ssdpResend    = 500 * time.Millisecond // the second round of M-SEARCH, against UDP loss
	ssdpMaxPacket = 2048                   // longer answers are dropped
	ssdpMaxURLs   = 8                      // distinct descriptions kept
	ssdpMaxErrors = 16                     // failed reads tolerated (Windows reports ICMP errors on reads)
	ssdpTTL       = 2
)

// discoverIGD searches with SSDP from local, on its interface only, for
// Internet gateway devices, and returns the URLs of their device
// descriptions, each on the host that answered. It waits until
// min(ctx's deadline, now+timeout) (timeout <= 0: 3 s) to gather every
// answer. Errors are *MapError: ErrNoGateway when none answered.
func discoverIGD(ctx context.Context, local netip.Addr, timeout time.Duration) ([]*url.URL, error) {
	return ssdpDiscover(ctx, local, timeout, netip.Addr{})
}

// ssdpDiscover is discoverIGD that stops at the first answer from known
// (when valid), and lists known's URLs first: a restarted gateway is found
// again without waiting out the window, which a short ctx needs for the
// requests that follow.
func ssdpDiscover(ctx context.Context, local netip.Addr, timeout time.Duration, known netip.Addr) ([]*url.URL, error) {
	local, known = local.Unmap(), known.Unmap()
	if !local.Is4() {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: SSDP from %v", p2pd.ErrBadFamily, local)}
	}
	if local.IsUnspecified() || local.IsMulticast() {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: SSDP from %v", p2pd.ErrInvalid, local)}
	}
	if timeout <= 0 {
		timeout = ssdpTimeout
	}
	if err := ctx.Err(); err != nil {
		return nil, &MapError{Protocol: "upnp", Err: err}
	}
	ifc, err := ssdpIface(local)
	if err != nil {
		return nil, &MapError{Protocol: "upnp", Err: err}
	}
	uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		return nil, &MapError{Protocol: "upnp", Err: err}
	}
	defer uc.Close()
	pc := ipv4.NewPacketConn(uc)
	if err := pc.SetMulticastInterface(ifc); err != nil {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("SSDP multicast interface %s: %w", ifc.Name, err)}
	}
	if err := pc.SetMulticastTTL(ssdpTTL); err != nil {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("SSDP multicast TTL: %w", err)}
	}

	start := time.Now()
	deadline := start.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	resend := start.Add(min(ssdpResend, timeout/2))
	stop := ssdpInterrupt(ctx, uc)
	defer stop()

	if err := ssdpSearch(uc); err != nil {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: SSDP: %w", ErrNoGateway, err)}
	}
	resent := false
	seen := make(map[string]bool)
	var urls []*url.URL
	buf := make([]byte, ssdpMaxPacket+1) // one byte more, to tell a cut datagram
	for fails := 0; fails < ssdpMaxErrors; {
		resendDue := !resent && resend.Before(deadline)
		wait := deadline
		if resendDue {
			wait = resend
		}
		_ = uc.SetReadDeadline(wait)
		// After setting the deadline: ssdpInterrupt's may have been overwritten.
		if ctx.Err() != nil {
			break
		}
		n, src, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !resendDue {
					break
				}
				resent = true
				_ = ssdpSearch(uc) // the first round went out: a failure here is not fatal
				continue
			}
			fails++
			continue
		}
		if n > ssdpMaxPacket {
			continue
		}
		u, ok := parseSSDP(buf[:n], src.Addr())
		if !ok || seen[u.String()] {
			continue
		}
		seen[u.String()] = true
		urls = append(urls, u)
		if len(urls) == ssdpMaxURLs || known.IsValid() && src.Addr().Unmap() == known {
			break
		}
	}
	slices.SortStableFunc(urls, func(a, b *url.URL) int {
		ka, kb := a.Hostname() == known.String(), b.Hostname() == known.String()
		switch {
		case ka && !kb:
			return -1
		case kb && !ka:
			return 1
		}
		return 0
	})
	if err := ctx.Err(); errors.Is(err, context.Canceled) {
		return nil, &MapError{Protocol: "upnp", Err: err}
	}
	if len(urls) == 0 {
		return nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: no SSDP answer from an Internet gateway device", ErrNoGateway)}
	}
	return urls, nil
}

// ssdpSearch sends one M-SEARCH per target to ssdpGroup. It fails only if
// none could be sent.
func ssdpSearch(uc *net.UDPConn) error {
	var first error
	sent := 0
	for _, st := range ssdpTargets {
		msg := "M-SEARCH * HTTP/1.1\r\n" +
			"HOST: 239.255.255.250:1900\r\n" +
			"MAN: \"ssdp:discover\"\r\n" +
			"MX: 2\r\n" +
			"ST: " + st + "\r\n\r\n"
		if _, err := uc.WriteToUDPAddrPort([]byte(msg), ssdpGroup); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		sent++
	}
	if sent == 0 {
		return first
	}
	return nil
}

// parseSSDP returns the LOCATION of an SSDP search answer (an HTTP 200
// response in a datagram b from src), if it is an http:// URL on src itself.
func parseSSDP(b []byte, src netip.Addr) (*url.URL, bool) {
	if len(b) > ssdpMaxPacket {
		return nil, false
	}
	// The blank line ends the header of an answer that left it out.
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(b), strings.NewReader("\r\n\r\n")), ssdpMaxPacket+8)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, false
	}
	loc := strings.TrimSpace(resp.Header.Get("Location"))
	if loc == "" {
		return nil, false
	}
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "http" || u.Opaque != "" || u.User != nil || u.Host == "" {
		return nil, false
	}
	host, err := netip.ParseAddr(u.Hostname())
	if err != nil || !host.Is4() || host != src.Unmap() {
		return nil, false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return nil, false
		}
	}
	u.Fragment, u.RawFragment = "", ""
	return u, true
}

// ssdpIface returns the interface that has address a.
func ssdpIface(a netip.Addr) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			n, ok := ad.(*net.IPNet)
			if !ok {
				continue
			}
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return &ifs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("%w: none has %v", p2pd.ErrNoInterface, a)
}

// ssdpInterrupt makes c's reads fail once ctx is done, until stop is
// called; stop returns only when that is no longer running.
func ssdpInterrupt(ctx context.Context, c net.Conn) (stop func()) {
	done := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		defer close(done)
		_ = c.SetReadDeadline(time.Unix(1, 0))
	})
	return func() {
		if !cancel() {
			<-done
		}
	}
}
