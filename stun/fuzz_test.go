package stun

import (
	"strconv"
	"testing"

	pion "github.com/pion/stun/v3"
)

func FuzzSplitServer(f *testing.F) {
	for _, s := range []string{"192.0.2.1:3478", "[2001:db8::1]:3478", "stun.example.net", "stun.example.net:0", "[::1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := splitServer(s)
		if err == nil && (host == "" || port == 0) {
			t.Fatalf("splitServer(%q) = %q, %d without an error", s, host, port)
		}
	})
}

// FuzzSTUNResponse: whatever a server sends back, decoding it and reading
// its mapped address does not panic.
func FuzzSTUNResponse(f *testing.F) {
	m := pion.MustBuild(pion.TransactionID, pion.BindingSuccess,
		&pion.XORMappedAddress{IP: []byte{192, 0, 2, 1}, Port: 4242}, pion.Fingerprint)
	f.Add(m.Raw)
	f.Add([]byte{})
	f.Add([]byte(strconv.Itoa(12345)))
	f.Fuzz(func(t *testing.T, b []byte) {
		var msg pion.Message
		if err := pion.Decode(append([]byte(nil), b...), &msg); err != nil {
			return
		}
		mappedAddr(&msg)
	})
}
