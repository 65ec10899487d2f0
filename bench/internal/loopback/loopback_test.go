package loopback

import (
	"net/netip"
	"testing"
)

func TestParseAddrPort(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9000":        "127.0.0.1:9000",
		"127.1.2.3:0":           "127.1.2.3:0",
		"[::1]:9000":            "[::1]:9000",
		"[::ffff:127.0.0.1]:80": "127.0.0.1:80",
		"10.0.0.1:9000":         "",
		"0.0.0.0:9000":          "",
		"[::]:9000":             "",
		"[fe80::1%lo]:9000":     "",
		"localhost:9000":        "",
		"127.0.0.1":             "",
		"":                      "",
	} {
		got, err := ParseAddrPort(in)
		if want == "" {
			if err == nil {
				t.Errorf("ParseAddrPort(%q) = %v, want an error", in, got)
			}
			continue
		}
		if err != nil || got != netip.MustParseAddrPort(want) {
			t.Errorf("ParseAddrPort(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

func TestFreePort(t *testing.T) {
	p, err := FreePort(netip.MustParseAddr("127.0.0.1"))
	if err != nil || p == 0 {
		t.Fatalf("FreePort = %d, %v", p, err)
	}
}
