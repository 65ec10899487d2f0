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

func TestServerAddr(t *testing.T) {
	ap, err := ServerAddr("127.0.0.1:0")
	if err != nil || ap.Port() == 0 || !ap.Addr().IsLoopback() {
		t.Fatalf("ServerAddr(127.0.0.1:0) = %v, %v: want a loopback address with a port", ap, err)
	}
	if ap, err := ServerAddr("127.0.0.1:9000"); err != nil || ap.Port() != 9000 {
		t.Fatalf("ServerAddr(127.0.0.1:9000) = %v, %v", ap, err)
	}
	if _, err := ServerAddr("192.0.2.1:0"); err == nil {
		t.Fatal("ServerAddr took a non-loopback address")
	}
}
