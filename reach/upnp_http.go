package reach

// The HTTP under UPnP's SOAP: every request dials from the LAN address on
// the calling goroutine (in the daemon's network namespace), answers are
// bounded, and failures become MapErrors.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/huin/goupnp/soap"
)

func upnpHTTPClient() *http.Client {
	return &http.Client{
		Transport: upnpTransport{&http.Transport{
			DialContext:            upnpTakeConn,
			DisableKeepAlives:      true,
			DisableCompression:     true,
			MaxResponseHeaderBytes: upnpMaxHeader,
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func upnpCode(err error) int {
	var me *MapError
	if errors.As(err, &me) {
		return me.Code
	}
	return 0
}

// soap runs one SOAP exchange with svc, bounded by ctx and c.timeout, and
// returns its failure as a *MapError.
func (c *upnpClient) soap(parent context.Context, svc upnpService, f func(context.Context) error) error {
	return c.soapFrom(parent, c.dialer, svc, f)
}

// soapFrom is soap over a connection d dials.
func (c *upnpClient) soapFrom(parent context.Context, d *net.Dialer, svc upnpService, f func(context.Context) error) error {
	ctx, ex, end, err := c.beginFrom(parent, d, &svc.GetServiceClient().SOAPClient.EndpointURL)
	if err != nil {
		return err
	}
	defer end()
	if err := f(ctx); err != nil {
		return upnpFail(parent, ex, err)
	}
	return nil
}

// upnpExchange is one HTTP exchange with the IGD. Its connection is dialed
// on the caller's goroutine, in the caller's network namespace (the
// Mapper's), and handed to the transport, which would dial on its own.
type upnpExchange struct {
	mu   sync.Mutex
	conn net.Conn // until the transport takes it
	err  error    // the transport's error, which goupnp reports as text only
}

type upnpExchangeKey struct{}

// begin dials u's host from c's LAN address for one exchange and returns
// the context for its request (bounded by parent and c.timeout), and end,
// which releases it.
func (c *upnpClient) begin(parent context.Context, u *url.URL) (context.Context, *upnpExchange, func(), error) {
	return c.beginFrom(parent, c.dialer, u)
}

// beginFrom is begin with a connection d dials: over IPv4 or IPv6, as u's
// host is.
func (c *upnpClient) beginFrom(parent context.Context, d *net.Dialer, u *url.URL) (context.Context, *upnpExchange, func(), error) {
	ex := new(upnpExchange)
	ctx, cancel := context.WithTimeout(context.WithValue(parent, upnpExchangeKey{}, ex), c.timeout)
	host, err := netip.ParseAddr(u.Hostname())
	if err != nil || u.Scheme != "http" {
		cancel()
		return nil, nil, nil, &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: bad URL %s", ErrNoGateway, u.Redacted())}
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	host = host.Unmap()
	network := "tcp4"
	if host.Is6() {
		network = "tcp6"
	}
	conn, err := d.DialContext(ctx, network, net.JoinHostPort(host.String(), port))
	if err != nil {
		cancel()
		ex.note(err)
		return nil, nil, nil, upnpFail(parent, ex, err)
	}
	ex.conn = conn
	return ctx, ex, func() {
		cancel()
		if conn := ex.take(); conn != nil {
			conn.Close()
		}
	}, nil
}

func (ex *upnpExchange) take() net.Conn {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	conn := ex.conn
	ex.conn = nil
	return conn
}

func (ex *upnpExchange) note(err error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.err == nil {
		ex.err = err
	}
}

func (ex *upnpExchange) failed() error {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.err
}

var errUPnPNoConn = errors.New("reach: upnp: no connection for this exchange")

// upnpTakeConn is the transport's dial: it takes the exchange's connection,
// if it goes to addr (a link-local address's zone aside: the connection
// names the interface, addr may number it).
func upnpTakeConn(ctx context.Context, _, addr string) (net.Conn, error) {
	ex, ok := ctx.Value(upnpExchangeKey{}).(*upnpExchange)
	if !ok {
		return nil, errUPnPNoConn
	}
	conn := ex.take()
	if conn == nil {
		return nil, errUPnPNoConn
	}
	want, err := netip.ParseAddrPort(addr)
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); !ok || err != nil || ta.AddrPort().Addr().Unmap().WithZone("") != want.Addr().Unmap().WithZone("") || ta.AddrPort().Port() != want.Port() {
		conn.Close()
		return nil, errUPnPNoConn
	}
	return conn, nil
}

func upnpNote(ctx context.Context, err error) {
	if ex, ok := ctx.Value(upnpExchangeKey{}).(*upnpExchange); ok {
		ex.note(err)
	}
}

// upnpFail makes err of an exchange a *MapError: a SOAP fault is ErrRefused
// with its UPnP error code; a transport failure ErrNoGateway; parent's
// cancellation itself; any other answer ErrRefused.
func upnpFail(parent context.Context, ex *upnpExchange, err error) *MapError {
	var f *soap.SOAPFaultError
	switch {
	case errors.As(err, &f):
		desc := f.Detail.UPnPError.ErrorDescription
		if desc == "" {
			desc = f.FaultString
		}
		return &MapError{Protocol: "upnp", Code: f.Detail.UPnPError.Errorcode, Err: fmt.Errorf("%w: %s", ErrRefused, upnpText(desc))}
	case errors.Is(parent.Err(), context.Canceled):
		return &MapError{Protocol: "upnp", Err: parent.Err()}
	case ex.failed() != nil:
		return &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: %w", ErrNoGateway, ex.failed())}
	}
	return &MapError{Protocol: "upnp", Err: fmt.Errorf("%w: %s", ErrRefused, upnpText(err.Error()))}
}

// upnpText is s from the network made short and printable, for error text.
func upnpText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > upnpMaxErrorLength {
		n := upnpMaxErrorLength
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "..."
	}
	return s
}

// upnpTransport cuts answers at upnpMaxBody bytes and notes transport
// errors for upnpFail.
type upnpTransport struct{ base http.RoundTripper }

func (t upnpTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		upnpNote(req.Context(), err)
		return nil, err
	}
	resp.Body = &upnpBody{rc: resp.Body, left: upnpMaxBody, ctx: req.Context()}
	return resp, nil
}

var errUPnPTooLarge = errors.New("reach: upnp: answer too large")

type upnpBody struct {
	rc   io.ReadCloser
	left int64
	ctx  context.Context
}

func (b *upnpBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errUPnPTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if err != nil && err != io.EOF {
		upnpNote(b.ctx, err)
	}
	return n, err
}

func (b *upnpBody) Close() error { return b.rc.Close() }
