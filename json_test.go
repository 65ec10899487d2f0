package p2pd_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/p2pd/p2pd"
)

func TestInterfaceJSONRoundTrip(t *testing.T) {
	ifc := testIface()
	ifc.HardwareAddr = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	if err := ifc.Resolve(context.Background(), mapResolver{mp("192.168.1.5"): mp("198.51.100.7")}); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ifc)
	if err != nil {
		t.Fatal(err)
	}
	var got p2pd.Interface
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(&got, ifc) {
		t.Errorf("round trip:\n got %v %v %v\nwant %v %v %v", &got, got.Routes4, got.Routes6, ifc, ifc.Routes4, ifc.Routes6)
	}
	if !strings.Contains(string(b), `"198.51.100.7"`) {
		t.Errorf("EXT IP missing from %s", b)
	}
	// Tunnels have hardware addresses net.ParseMAC refuses.
	for _, hw := range []net.HardwareAddr{{1, 2, 3, 4}, make(net.HardwareAddr, 16)} {
		ifc.HardwareAddr = hw
		b, _ := json.Marshal(ifc)
		var got p2pd.Interface
		if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got.HardwareAddr, hw) {
			t.Errorf("hardware address %v: %v, %v", hw, got.HardwareAddr, err)
		}
	}
}

func TestInterfaceJSONBuildsRoutes(t *testing.T) {
	var ifc p2pd.Interface
	in := `{"name":"wg0","index":7,"flags":"up|pointtopoint","mtu":1420,
		"addrs":[{"addr":"10.9.0.2","bits":24},{"addr":"fe80::9","bits":64,"flags":"permanent|nodad"},{"addr":"2001:db8::2","bits":64}]}`
	if err := json.Unmarshal([]byte(in), &ifc); err != nil {
		t.Fatal(err)
	}
	if ifc.Addrs[1].Addr != mp("fe80::9%wg0") || ifc.Addrs[1].Flags != p2pd.AddrPermanent|p2pd.AddrNoDAD {
		t.Errorf("link-local = %v", ifc.Addrs[1])
	}
	if len(ifc.Routes4) != 1 || len(ifc.Routes6) != 1 || ifc.Routes6[0].LinkLocal() != mp("fe80::9%wg0") {
		t.Errorf("routes = %v %v", ifc.Routes4, ifc.Routes6)
	}
	if !ifc.Supports(p2pd.IPv4) || !ifc.Supports(p2pd.IPv6) || ifc.Flags&net.FlagPointToPoint == 0 {
		t.Errorf("flags %v, supported %v", ifc.Flags, ifc.Supported())
	}
}

// badInterfaceJSON are decoder inputs that must be refused with ErrInvalid
// (or ErrBadFamily), one per rule.
var badInterfaceJSON = []string{
	`{`,
	`[]`,
	`{"name":"","index":1}`,
	`{"name":"a%b","index":1}`,
	`{"name":"eth0","index":-1}`,
	`{"name":"eth0","mtu":-5}`,
	`{"name":"eth0","flags":"up|bogus"}`,
	`{"name":"eth0","mac":"zz:00"}`,
	`{"name":"eth0","mac":"1:2:3"}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":33}]}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":-1}]}`,
	`{"name":"eth0","addrs":[{"addr":"::ffff:10.0.0.1","bits":24}]}`,
	`{"name":"eth0","addrs":[{"addr":"not-an-ip","bits":24}]}`,
	`{"name":"eth0","addrs":[{"addr":"fe80::1%eth1","bits":64}]}`,
	`{"name":"eth0","addrs":[{"addr":"2001:db8::1%eth0","bits":64}]}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8,"flags":"shiny"}]}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8}],"routes":{"any":[]}}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8}],"routes":{"6":[{"af":"4","nic_ips":["10.0.0.1"]}]}}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8}],"routes":{"4":[{"af":"4","nic_ips":["10.0.0.2"]}]}}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8}],"routes":{"4":[{"af":"4","nic_ips":[]}]}}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8}],"routes":{"4":[{"af":"4","interface":"eth1","nic_ips":["10.0.0.1"]}]}}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8}],"routes":{"4":[{"af":"4","nic_ips":["10.0.0.1"],"ext_ips":["2001:db8::1"]}]}}`,
	`{"name":"eth0","addrs":[{"addr":"fe80::1","bits":64}],"routes":{"6":[{"af":"6","nic_ips":["fe80::1%eth9"]}]}}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8}],"routes":{"4":[{"af":"4","nic_ips":["10.0.0.1"],"bound":"[::1]:80"}]}}`,
	`{"name":"eth0","addrs":[{"addr":"10.0.0.1","bits":8}],"routes":{"4":[{"af":"7","nic_ips":["10.0.0.1"]}]}}`,
}

func TestInterfaceJSONInvalid(t *testing.T) {
	for _, in := range badInterfaceJSON {
		var ifc p2pd.Interface
		err := json.Unmarshal([]byte(in), &ifc)
		var syntax *json.SyntaxError // refused by encoding/json before our decoder runs
		if !errors.Is(err, p2pd.ErrInvalid) && !errors.Is(err, p2pd.ErrBadFamily) && !errors.As(err, &syntax) {
			t.Errorf("%s: err = %v, want ErrInvalid", in, err)
		}
		if ifc.Name != "" {
			t.Errorf("%s: failed decode changed the interface: %v", in, &ifc)
		}
	}
}

func TestRouteJSON(t *testing.T) {
	r := p2pd.Route{Family: p2pd.IPv6, Interface: "eth0", NIC: []netip.Addr{mp("2001:db8::1"), mp("fe80::1%eth0")}, Ext: []netip.Addr{mp("2001:db8::1")}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "bound") {
		t.Errorf("unbound route encodes a bound address: %s", b)
	}
	rb, _ := r.Bind("fe80::1", 8080)
	for _, in := range []p2pd.Route{r, rb} {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out p2pd.Route
		if err := json.Unmarshal(b, &out); err != nil || !reflect.DeepEqual(in, out) {
			t.Errorf("round trip %s: %v, %v", b, out, err)
		}
	}
	for _, in := range []string{`{"af":"5"}`, `{"af":"4","nic_ips":["::1"]}`, `{"af":"4"}`, `{"af":"6","nic_ips":["fe80::1%x"],"interface":"y"}`} {
		var out p2pd.Route
		if err := json.Unmarshal([]byte(in), &out); err == nil {
			t.Errorf("%s: decoded to %v", in, out)
		}
	}
	if _, err := json.Marshal(p2pd.Route{}); !errors.Is(err, p2pd.ErrBadFamily) {
		t.Errorf("Marshal of zero route: %v", err)
	}
}

func FuzzInterfaceJSON(f *testing.F) {
	// Seeds: a full interface, a minimal one, a route pool, and every bad case.
	full, _ := json.Marshal(testIface())
	f.Add(string(full))
	f.Add(`{"name":"lo","index":1,"flags":"up|loopback","mtu":65536,"addrs":[{"addr":"127.0.0.1","bits":8},{"addr":"::1","bits":128}]}`)
	f.Add(`{"name":"e","addrs":[{"addr":"fe80::1","bits":64},{"addr":"fd00::1","bits":64}],"routes":{"6":[{"af":"6","nic_ips":["fd00::1","fe80::1"],"ext_ips":[]}]}}`)
	for _, s := range badInterfaceJSON {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var a p2pd.Interface
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			return
		}
		b, err := json.Marshal(&a)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it: %v", s, err)
		}
		var c p2pd.Interface
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("re-decode of %s: %v", b, err)
		}
		if !reflect.DeepEqual(a, c) {
			t.Fatalf("round trip differs:\n%v\n%v", &a, &c)
		}
	})
}
