package reach

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
)

// The tests run on loopback: an SSDP responder on a 127.0.0.1 UDP socket
// stands for the multicast group (ssdpGroup), and an httptest server for
// the IGD.

var upnpTestLocal = netip.MustParseAddr("127.0.0.1")

const (
	upnpTestTimeout = 2 * time.Second // SSDP window and HTTP bound in these tests
	upnpTestExt     = "203.0.113.1"
	urnWANIP2       = "urn:schemas-upnp-org:service:WANIPConnection:2"
	urnWANIP1       = "urn:schemas-upnp-org:service:WANIPConnection:1"
)

// ssdpResponder answers each M-SEARCH it gets with its replies.
type ssdpResponder struct {
	t    *testing.T
	conn *net.UDPConn
	wg   sync.WaitGroup

	mu      sync.Mutex
	replies []string
	sts     map[string]int // M-SEARCHes got, by ST
	bad     []string       // malformed M-SEARCHes
}

// newSSDPResponder starts a responder and points ssdpGroup at it until
// the test ends.
func newSSDPResponder(t *testing.T, replies ...string) *ssdpResponder {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(upnpTestLocal, 0)))
	if err != nil {
		t.Fatal(err)
	}
	r := &ssdpResponder{t: t, conn: conn, replies: replies, sts: make(map[string]int)}
	old := ssdpGroup
	ssdpGroup = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() {
		conn.Close()
		r.wg.Wait()
		ssdpGroup = old
	})
	return r
}

func (r *ssdpResponder) serve() {
	defer r.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		st, ok := checkMSearch(msg)
		r.mu.Lock()
		if ok {
			r.sts[st]++
		} else {
			r.bad = append(r.bad, msg)
		}
		replies := r.replies
		r.mu.Unlock()
		for _, rep := range replies {
			_, _ = r.conn.WriteToUDPAddrPort([]byte(rep), from)
		}
	}
}

// checkMSearch returns the ST of a well-formed M-SEARCH.
func checkMSearch(msg string) (string, bool) {
	lines := strings.Split(msg, "\r\n")
	if len(lines) < 6 || lines[0] != "M-SEARCH * HTTP/1.1" || !strings.HasSuffix(msg, "\r\n\r\n") {
		return "", false
	}
	h := make(map[string]string)
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok {
			h[strings.ToUpper(k)] = strings.TrimSpace(v)
		}
	}
	if h["HOST"] != "239.255.255.250:1900" || h["MAN"] != `"ssdp:discover"` || h["MX"] != "2" {
		return "", false
	}
	for _, st := range ssdpTargets {
		if h["ST"] == st {
			return st, true
		}
	}
	return "", false
}

func (r *ssdpResponder) setReplies(replies ...string) {
	r.mu.Lock()
	r.replies = replies
	r.mu.Unlock()
}

// waitSearches waits until every target was asked for at least n times:
// the M-SEARCHes were sent before discoverIGD returned, so they are
// already in the responder's socket.
func (r *ssdpResponder) waitSearches(n int) {
	r.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		r.mu.Lock()
		done := true
		for _, st := range ssdpTargets {
			done = done && r.sts[st] >= n
		}
		sts, bad := fmt.Sprint(r.sts), r.bad
		r.mu.Unlock()
		if len(bad) > 0 {
			r.t.Fatalf("malformed M-SEARCH: %q", bad)
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("M-SEARCHes got: %s; want each of %d targets %d times", sts, len(ssdpTargets), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ssdpReply is an SSDP search answer pointing at loc.
func ssdpReply(loc string) string {
	return "HTTP/1.1 200 OK\r\n" +
		"CACHE-CONTROL: max-age=120\r\n" +
		"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n" +
		"USN: uuid:00000000-0000-0000-0000-000000000000::urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n" +
		"EXT:\r\n" +
		"SERVER: test UPnP/1.1 fake/1.0\r\n" +
		"LOCATION: " + loc + "\r\n\r\n"
}

// soapCall is one SOAP action the fake IGD got.
type soapCall struct {
	action string
	args   map[string]string
	from   netip.Addr // the address it came from
}

// fakeIGD is an IGD with one WAN connection service, and an IPv6
// firewall control when fw is set (upnp_pinhole_test.go).
type fakeIGD struct {
	t         *testing.T
	srv       *httptest.Server
	service   string        // its service type; "": none
	control   string        // its controlURL in the description
	fw        *fakeFirewall // set before discovery
	fwControl string        // the firewall control's controlURL

	mu            sync.Mutex
	taken         map[uint16]bool   // external ports held by another client: 718
	permanentOnly bool              // 725 for a non-zero lease
	refuse        int               // a fault code for every AddPortMapping
	noExt         bool              // GetExternalIPAddress answers 0.0.0.0
	mappings      map[string]string // "TCP 4000" → internal client:port
	calls         []soapCall
	descs         int // device descriptions served
}

func newFakeIGD(t *testing.T, service string) *fakeIGD {
	g := &fakeIGD{t: t, service: service, control: "/ctl", fwControl: "/fw", taken: make(map[uint16]bool), mappings: make(map[string]string)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /desc.xml", g.describe)
	mux.HandleFunc("POST /ctl", g.controlHandler)
	mux.HandleFunc("POST /fw", g.firewallHandler)
	g.srv = httptest.NewServer(mux)
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeIGD) loc() string { return g.srv.URL + "/desc.xml" }

func (g *fakeIGD) describe(w http.ResponseWriter, _ *http.Request) {
	g.mu.Lock()
	g.descs++
	g.mu.Unlock()
	var services string
	if g.service != "" {
		services = fmt.Sprintf(`<service>
<serviceType>%s</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/scpd.xml</SCPDURL>
<controlURL>%s</controlURL>
<eventSubURL>/evt</eventSubURL>
</service>`, g.service, g.control)
	}
	if g.fw != nil {
		services += fmt.Sprintf(`<service>
<serviceType>%s</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPv6Firewall1</serviceId>
<SCPDURL>/fw.xml</SCPDURL>
<controlURL>%s</controlURL>
<eventSubURL>/evt/fw</eventSubURL>
</service>`, urnFirewall, g.fwControl)
	}
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	fmt.Fprintf(w, `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>1</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<friendlyName>fake IGD</friendlyName>
<UDN>uuid:00000000-0000-0000-0000-000000000000</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType>
<UDN>uuid:00000000-0000-0000-0000-000000000001</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType>
<UDN>uuid:00000000-0000-0000-0000-000000000002</UDN>
<serviceList>%s</serviceList>
</device></deviceList>
</device></deviceList>
</device>
</root>`, services)
}

// soapArgs reads the action's arguments from a SOAP request body.
func soapArgs(r *http.Request) (map[string]string, error) {
	args := make(map[string]string)
	d := xml.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	depth, name := 0, ""
	for {
		tok, err := d.Token()
		if err != nil {
			if depth == 0 {
				return args, nil
			}
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 4 { // Envelope > Body > action > argument
				name = tok.Name.Local
				args[name] = ""
			}
		case xml.CharData:
			if depth == 4 {
				args[name] += string(tok)
			}
		case xml.EndElement:
			depth--
		}
	}
}

func (g *fakeIGD) controlHandler(w http.ResponseWriter, r *http.Request) {
	ns, action, ok := strings.Cut(strings.Trim(r.Header.Get("SOAPAction"), `"`), "#")
	args, err := soapArgs(r)
	if !ok || g.service == "" || ns != g.service || err != nil {
		soapFault(w, 401, "Invalid Action")
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, soapCall{action: action, args: args, from: upnpPeer(r)})
	switch action {
	case "GetExternalIPAddress":
		ext := upnpTestExt
		if g.noExt {
			ext = "0.0.0.0"
		}
		soapOK(w, g.service, action, "<NewExternalIPAddress>"+ext+"</NewExternalIPAddress>")
	case "AddPortMapping":
		if g.refuse != 0 {
			soapFault(w, g.refuse, "Action not authorized")
			return
		}
		port, err := strconv.ParseUint(args["NewExternalPort"], 10, 16)
		if err != nil || port == 0 || args["NewInternalClient"] == "" || args["NewInternalClient"] == "0.0.0.0" {
			soapFault(w, 402, "Invalid Args")
			return
		}
		if g.taken[uint16(port)] {
			soapFault(w, 718, "ConflictInMappingEntry")
			return
		}
		if g.permanentOnly && args["NewLeaseDuration"] != "0" {
			soapFault(w, 725, "OnlyPermanentLeasesSupported")
			return
		}
		g.mappings[args["NewProtocol"]+" "+args["NewExternalPort"]] = args["NewInternalClient"] + ":" + args["NewInternalPort"]
		soapOK(w, g.service, action, "")
	case "AddAnyPortMapping":
		if g.service != urnWANIP2 {
			soapFault(w, 401, "Invalid Action")
			return
		}
		port := uint16(40000)
		for g.taken[port] || g.mappings[args["NewProtocol"]+" "+strconv.Itoa(int(port))] != "" {
			port++
		}
		g.mappings[args["NewProtocol"]+" "+strconv.Itoa(int(port))] = args["NewInternalClient"] + ":" + args["NewInternalPort"]
		soapOK(w, g.service, action, "<NewReservedPort>"+strconv.Itoa(int(port))+"</NewReservedPort>")
	case "DeletePortMapping":
		key := args["NewProtocol"] + " " + args["NewExternalPort"]
		if _, ok := g.mappings[key]; !ok {
			soapFault(w, 714, "NoSuchEntryInArray")
			return
		}
		delete(g.mappings, key)
		soapOK(w, g.service, action, "")
	default:
		soapFault(w, 401, "Invalid Action")
	}
}

// upnpPeer is the address r came from.
func upnpPeer(r *http.Request) netip.Addr {
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	return ap.Addr().Unmap()
}

func soapOK(w http.ResponseWriter, ns, action, body string) {
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	fmt.Fprintf(w, `<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="%s">%s</u:%sResponse></s:Body></s:Envelope>`,
		action, ns, body, action)
}

func soapFault(w http.ResponseWriter, code int, desc string) {
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>%s</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`,
		code, desc)
}

// actions returns the calls of action got so far.
func (g *fakeIGD) actions(action string) []soapCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []soapCall
	for _, c := range g.calls {
		if c.action == action {
			out = append(out, c)
		}
	}
	return out
}

func (g *fakeIGD) mapping(key string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mappings[key]
}

func upnpCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newTestUPnP discovers g through a responder and returns the client.
func newTestUPnP(t *testing.T, g *fakeIGD) (*upnpClient, *ssdpResponder) {
	t.Helper()
	r := newSSDPResponder(t, ssdpReply(g.loc()))
	c, err := newUPnP(upnpCtx(t), upnpTestLocal, upnpTestTimeout)
	if err != nil {
		t.Fatalf("newUPnP: %v", err)
	}
	return c, r
}

// upnpWantCall checks an AddPortMapping (or AddAnyPortMapping) call's arguments.
func upnpWantCall(t *testing.T, c soapCall, proto string, ext, internal uint16, lease string) {
	t.Helper()
	want := map[string]string{
		"NewRemoteHost":             "",
		"NewExternalPort":           strconv.Itoa(int(ext)),
		"NewProtocol":               proto,
		"NewInternalPort":           strconv.Itoa(int(internal)),
		"NewInternalClient":         "127.0.0.1",
		"NewEnabled":                "1",
		"NewPortMappingDescription": "p2pd",
		"NewLeaseDuration":          lease,
	}
	for k, v := range want {
		if got, ok := c.args[k]; !ok || got != v {
			t.Errorf("%s %s = %q (present %v), want %q", c.action, k, got, ok, v)
		}
	}
}

func TestSSDPDiscover(t *testing.T) {
	good := "http://127.0.0.1:5000/rootDesc.xml"
	r := newSSDPResponder(t,
		"garbage\x00\xff",
		"HTTP/1.1 404 Not Found\r\nLOCATION: http://127.0.0.1:5001/x.xml\r\n\r\n",
		ssdpReply("http://127.0.0.2:5000/rootDesc.xml"), // another host than the sender
		ssdpReply("http://router.lan:5000/rootDesc.xml"),
		ssdpReply("https://127.0.0.1:5000/rootDesc.xml"),
		ssdpReply("http://user@127.0.0.1:5000/rootDesc.xml"),
		ssdpReply("http://127.0.0.1:0/rootDesc.xml"),
		"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n\r\n", // no LOCATION
		ssdpReply(good),
		ssdpReply(good+"#again"),
		// Without the blank line at the end: still an answer.
		strings.TrimSuffix(ssdpReply("http://127.0.0.1:5002/igd.xml"), "\r\n"),
	)
	urls, err := discoverIGD(upnpCtx(t), upnpTestLocal, upnpTestTimeout)
	if err != nil {
		t.Fatalf("discoverIGD: %v", err)
	}
	var got []string
	for _, u := range urls {
		got = append(got, u.String())
	}
	want := []string{good, "http://127.0.0.1:5002/igd.xml"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("discoverIGD = %q, want %q", got, want)
	}
	// Two rounds of M-SEARCH, one per target each.
	r.waitSearches(2)
}

// TestSSDPStopsAtKnown: a search for a known host ends at its answer.
func TestSSDPStopsAtKnown(t *testing.T) {
	other := "http://127.0.0.1:5003/other.xml"
	newSSDPResponder(t, ssdpReply(other))
	ctx := upnpCtx(t)
	urls, err := ssdpDiscover(ctx, upnpTestLocal, time.Hour, upnpTestLocal)
	if err != nil || len(urls) != 1 || urls[0].String() != other {
		t.Fatalf("ssdpDiscover = %v, %v", urls, err)
	}
	if ctx.Err() != nil {
		t.Fatal("ssdpDiscover waited out its context")
	}
}

func TestSSDPNoAnswer(t *testing.T) {
	newSSDPResponder(t) // silent
	ctx := upnpCtx(t)
	for _, f := range []struct {
		name string
		fn   func() error
	}{
		{"discoverIGD", func() error { _, err := discoverIGD(ctx, upnpTestLocal, 300*time.Millisecond); return err }},
		{"newUPnP", func() error { _, err := newUPnP(ctx, upnpTestLocal, 300*time.Millisecond); return err }},
	} {
		err := f.fn()
		var me *MapError
		if !errors.Is(err, ErrNoGateway) || !errors.As(err, &me) || me.Protocol != "upnp" {
			t.Errorf("%s: %v, want a upnp *MapError wrapping ErrNoGateway", f.name, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("%s returned after its context's deadline, not its timeout", f.name)
		}
		upnpCheckText(t, err)
	}
}

func TestSSDPCanceled(t *testing.T) {
	newSSDPResponder(t)
	ctx, cancel := context.WithCancel(context.Background())
	stop := time.AfterFunc(50*time.Millisecond, cancel)
	defer stop.Stop()
	_, err := discoverIGD(ctx, upnpTestLocal, time.Minute)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("discoverIGD after cancel: %v, want context.Canceled", err)
	}
}

func TestSSDPBadLocal(t *testing.T) {
	for _, a := range []string{"::1", "0.0.0.0"} {
		_, err := discoverIGD(context.Background(), netip.MustParseAddr(a), time.Second)
		if !errors.Is(err, p2pd.ErrBadFamily) && !errors.Is(err, p2pd.ErrInvalid) {
			t.Errorf("discoverIGD from %s: %v", a, err)
		}
	}
}

func TestUPnPMapV2(t *testing.T) {
	g := newFakeIGD(t, urnWANIP2)
	c, _ := newTestUPnP(t, g)
	if c.Protocol() != "upnp" {
		t.Errorf("Protocol() = %q", c.Protocol())
	}
	ctx := upnpCtx(t)

	l, err := c.Map(ctx, p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if l.Protocol != "upnp" || l.Proto != p2pd.TCP || l.Internal.String() != "127.0.0.1:4000" ||
		l.External.String() != upnpTestExt+":4000" || l.Lifetime != time.Hour || l.Granted.IsZero() {
		t.Errorf("Map = %+v", l)
	}
	adds := g.actions("AddPortMapping")
	if len(adds) != 1 {
		t.Fatalf("AddPortMapping calls: %v", adds)
	}
	upnpWantCall(t, adds[0], "TCP", 4000, 4000, "3600")

	// An unspecified internal address is mapped as the LAN address.
	u, err := c.Map(ctx, p2pd.UDP, netip.MustParseAddrPort("0.0.0.0:4001"), 5001, 90*time.Second+time.Millisecond, nil)
	if err != nil {
		t.Fatalf("Map UDP: %v", err)
	}
	if u.External.String() != upnpTestExt+":5001" || u.Internal.String() != "127.0.0.1:4001" || u.Lifetime != 91*time.Second {
		t.Errorf("Map UDP = %+v", u)
	}
	upnpWantCall(t, g.actions("AddPortMapping")[1], "UDP", 5001, 4001, "91")

	// Renewal keeps the port, whatever want is, and restores a mapping the
	// router forgot.
	g.mu.Lock()
	clear(g.mappings)
	g.mu.Unlock()
	r, err := c.Map(ctx, p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 6000, time.Hour, &l)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if r.External != l.External {
		t.Errorf("renewed External = %v, want %v", r.External, l.External)
	}
	upnpWantCall(t, g.actions("AddPortMapping")[2], "TCP", 4000, 4000, "3600")
	if got := g.mapping("TCP 4000"); got != "127.0.0.1:4000" {
		t.Errorf("mapping after renewal = %q", got)
	}
	// The external address was asked once (newUPnP) and reused since.
	if n := len(g.actions("GetExternalIPAddress")); n != 1 {
		t.Errorf("GetExternalIPAddress calls = %d, want 1", n)
	}

	if err := c.Unmap(ctx, r); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	dels := g.actions("DeletePortMapping")
	if len(dels) != 1 || dels[0].args["NewExternalPort"] != "4000" || dels[0].args["NewProtocol"] != "TCP" || dels[0].args["NewRemoteHost"] != "" {
		t.Errorf("DeletePortMapping calls: %v", dels)
	}
	if got := g.mapping("TCP 4000"); got != "" {
		t.Errorf("mapping after Unmap = %q", got)
	}
	// A mapping already gone is no error.
	if err := c.Unmap(ctx, r); err != nil {
		t.Errorf("second Unmap: %v", err)
	}
}

func TestUPnPMapV1Conflict(t *testing.T) {
	g := newFakeIGD(t, urnWANIP1)
	g.taken[4000] = true
	c, _ := newTestUPnP(t, g)
	l, err := c.Map(upnpCtx(t), p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	adds := g.actions("AddPortMapping")
	if len(adds) != 2 {
		t.Fatalf("AddPortMapping calls: %v", adds)
	}
	upnpWantCall(t, adds[0], "TCP", 4000, 4000, "3600")
	upnpWantCall(t, adds[1], "TCP", l.External.Port(), 4000, "3600")
	if l.External.Port() == 4000 || l.External.Port() < 1024 || l.External.Addr().String() != upnpTestExt {
		t.Errorf("Map after a conflict = %v", l.External)
	}
	if n := len(g.actions("AddAnyPortMapping")); n != 0 {
		t.Errorf("AddAnyPortMapping asked of a WANIPConnection:1 %d times", n)
	}
}

func TestUPnPMapV2Conflict(t *testing.T) {
	g := newFakeIGD(t, urnWANIP2)
	g.taken[4000] = true
	c, _ := newTestUPnP(t, g)
	l, err := c.Map(upnpCtx(t), p2pd.UDP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if l.External.String() != upnpTestExt+":40000" {
		t.Errorf("Map after a conflict = %v, want the port AddAnyPortMapping gave", l.External)
	}
	anys := g.actions("AddAnyPortMapping")
	if len(anys) != 1 {
		t.Fatalf("AddAnyPortMapping calls: %v", anys)
	}
	upnpWantCall(t, anys[0], "UDP", 4000, 4000, "3600")
}

func TestUPnPPermanentOnly(t *testing.T) {
	g := newFakeIGD(t, urnWANIP1)
	g.permanentOnly = true
	c, _ := newTestUPnP(t, g)
	ctx := upnpCtx(t)
	l, err := c.Map(ctx, p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if l.Lifetime != 0 || l.External.Port() != 4000 {
		t.Errorf("Map = %+v, want a permanent lease of port 4000", l)
	}
	if _, err := c.Map(ctx, p2pd.UDP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil); err != nil {
		t.Fatalf("second Map: %v", err)
	}
	adds := g.actions("AddPortMapping")
	if len(adds) != 3 {
		t.Fatalf("AddPortMapping calls: %v", adds)
	}
	upnpWantCall(t, adds[0], "TCP", 4000, 4000, "3600")
	upnpWantCall(t, adds[1], "TCP", 4000, 4000, "0")
	upnpWantCall(t, adds[2], "UDP", 4000, 4000, "0") // straight to permanent
}

func TestUPnPFault(t *testing.T) {
	g := newFakeIGD(t, urnWANIP2)
	g.refuse = 606
	c, _ := newTestUPnP(t, g)
	_, err := c.Map(upnpCtx(t), p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil)
	var me *MapError
	if !errors.As(err, &me) || me.Code != 606 || me.Protocol != "upnp" || !errors.Is(err, ErrRefused) || errors.Is(err, ErrNoGateway) {
		t.Fatalf("Map refused: %v, want a upnp *MapError, code 606, wrapping ErrRefused", err)
	}
	if !strings.Contains(err.Error(), "Action not authorized") {
		t.Errorf("error text %q lacks the gateway's description", err)
	}
	upnpCheckText(t, err)
}

func TestUPnPBadArgs(t *testing.T) {
	g := newFakeIGD(t, urnWANIP2)
	c, _ := newTestUPnP(t, g)
	ctx := upnpCtx(t)
	for _, tc := range []struct {
		proto    p2pd.Proto
		internal string
		lifetime time.Duration
		want     error
	}{
		{p2pd.TCP, "[::1]:4000", time.Hour, p2pd.ErrInvalid}, // IPv6: a pinhole, for a global address only
		{p2pd.TCP, "127.0.0.1:0", time.Hour, p2pd.ErrBadPort},
		{p2pd.Proto(9), "127.0.0.1:4000", time.Hour, p2pd.ErrInvalid},
		{p2pd.TCP, "127.0.0.1:4000", 0, p2pd.ErrInvalid},
	} {
		_, err := c.Map(ctx, tc.proto, netip.MustParseAddrPort(tc.internal), 0, tc.lifetime, nil)
		var me *MapError
		if !errors.Is(err, tc.want) || !errors.As(err, &me) {
			t.Errorf("Map(%v, %s, %v): %v, want %v", tc.proto, tc.internal, tc.lifetime, err, tc.want)
		}
	}
	if err := c.Unmap(ctx, lease{Protocol: "pcp", Proto: p2pd.TCP, External: netip.MustParseAddrPort("203.0.113.1:4000")}); !errors.Is(err, p2pd.ErrInvalid) {
		t.Errorf("Unmap of a PCP lease: %v", err)
	}
	if n := len(g.actions("AddPortMapping")); n != 0 {
		t.Errorf("AddPortMapping asked %d times for bad arguments", n)
	}
}

// TestUPnPRediscover: the router restarted on another HTTP port; Map finds
// it again.
func TestUPnPRediscover(t *testing.T) {
	g1 := newFakeIGD(t, urnWANIP2)
	c, r := newTestUPnP(t, g1)
	g1.srv.Close()
	g2 := newFakeIGD(t, urnWANIP2)
	r.setReplies(ssdpReply(g2.loc()))
	// The search stops at the known host's answer: were it to wait out
	// its window, it would use up Map's context.
	c.timeout = time.Hour
	ctx := upnpCtx(t)
	l, err := c.Map(ctx, p2pd.TCP, netip.MustParseAddrPort("127.0.0.1:4000"), 0, time.Hour, nil)
	if err != nil {
		t.Fatalf("Map after the restart: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Map used up its context")
	}
	if l.External.String() != upnpTestExt+":4000" || g2.mapping("TCP 4000") != "127.0.0.1:4000" {
		t.Errorf("Map = %+v; restarted router has %q", l, g2.mapping("TCP 4000"))
	}
}

// TestUPnPUnreachable: a router that does not serve its description, or
// whose control URL is on another host, is no gateway.
func TestUPnPUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	foreign := newFakeIGD(t, urnWANIP2)
	foreign.control = "http://127.0.0.2:1/ctl"
	for _, loc := range []string{"http://" + closed + "/desc.xml", foreign.loc()} {
		newSSDPResponder(t, ssdpReply(loc))
		_, err := newUPnP(upnpCtx(t), upnpTestLocal, upnpTestTimeout)
		var me *MapError
		if !errors.Is(err, ErrNoGateway) || !errors.As(err, &me) {
			t.Errorf("newUPnP with %s: %v, want ErrNoGateway", loc, err)
		}
		upnpCheckText(t, err)
	}
	foreign.mu.Lock()
	defer foreign.mu.Unlock()
	if n := len(foreign.calls); n != 0 {
		t.Errorf("the foreign control URL's IGD got %d calls", n)
	}
}

// upnpCheckText checks that err's text says "p2pd: " once, at the start.
func upnpCheckText(t *testing.T, err error) {
	t.Helper()
	if s := err.Error(); !strings.HasPrefix(s, "p2pd: ") || strings.Count(s, "p2pd: ") != 1 {
		t.Errorf("error text %q: want \"p2pd: \" once, at the start", s)
	}
}
