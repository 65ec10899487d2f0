package reach

import (
	"net/netip"
	"testing"
)

// FuzzSSDPResponse checks that parseSSDP never panics and accepts only an
// http:// LOCATION on the sender itself.
func FuzzSSDPResponse(f *testing.F) {
	f.Add([]byte(ssdpReply("http://192.168.1.1:5000/rootDesc.xml")), []byte{192, 168, 1, 1})
	f.Add([]byte(ssdpReply("http://192.168.1.2:5000/rootDesc.xml")), []byte{192, 168, 1, 1})
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1/x#y\r\n"), []byte{10, 0, 0, 1})
	f.Add([]byte("HTTP/1.1 200 OK\nLocation: http://[::ffff:10.0.0.1]:80/\n\n"), []byte{10, 0, 0, 1})
	f.Add([]byte("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n"), []byte{10, 0, 0, 1})
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: https://10.0.0.1:443/\r\n\r\n"), []byte{10, 0, 0, 1})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, b, src []byte) {
		from, _ := netip.AddrFromSlice(src)
		u, ok := parseSSDP(b, from)
		if !ok {
			if u != nil {
				t.Fatalf("rejected, yet URL %v", u)
			}
			return
		}
		if len(b) > ssdpMaxPacket {
			t.Fatalf("accepted a %d-byte datagram", len(b))
		}
		if u.Scheme != "http" || u.User != nil || u.Opaque != "" || u.Fragment != "" {
			t.Fatalf("accepted %q", u)
		}
		host, err := netip.ParseAddr(u.Hostname())
		if err != nil || !host.Is4() || host != from.Unmap() {
			t.Fatalf("accepted %q from %v", u, from)
		}
	})
}
