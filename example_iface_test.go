package p2pd_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/p2pd/p2pd"
)

// A saved network view (here inline) is loaded, and its routes bound.
func ExampleRoute_Bind() {
	var ifc p2pd.Interface
	err := json.Unmarshal([]byte(`{"name":"eth0","index":2,"flags":"up|multicast","mtu":1500,
		"addrs":[{"addr":"192.168.1.5","bits":24},{"addr":"fe80::1","bits":64},{"addr":"2001:db8::5","bits":64}]}`), &ifc)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("serves:", ifc.Supported())
	r4, _ := ifc.Routes4.First()
	r6, _ := ifc.Routes6.First()
	for _, b := range []struct {
		r    p2pd.Route
		host string
	}{{r4, ""}, {r4, "*"}, {r6, ""}, {r6, "fe80::1"}, {r6, "localhost"}} {
		bound, err := b.r.Bind(b.host, 8080)
		fmt.Println(bound.Bound, err)
	}
	_, err = r4.Bind("10.0.0.1", 8080)
	fmt.Println(err)
	// Output:
	// serves: [IPv4 IPv6]
	// 192.168.1.5:8080 <nil>
	// 0.0.0.0:8080 <nil>
	// [2001:db8::5]:8080 <nil>
	// [fe80::1%eth0]:8080 <nil>
	// [::1]:8080 <nil>
	// p2pd: bind 10.0.0.1: address not on route
}

func ExampleInterfaces() {
	list, err := p2pd.Interfaces()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ifc := range list {
		if !ifc.IsUp() || ifc.Flags&net.FlagLoopback == 0 {
			continue // a real program looks at the others: ifc.Name, ifc.Supported(), ifc.Routes4, ...
		}
		for _, a := range ifc.Addrs {
			if a.Addr == netip.MustParseAddr("127.0.0.1") {
				fmt.Println("loopback:", a.Prefix(), a.Scope())
			}
		}
	}
	// Output:
	// loopback: 127.0.0.1/8 loopback
}

// The seed's port list, [10000, [30000, 30100]], written and parsed.
func ExampleParsePorts() {
	ps := p2pd.Ports{p2pd.Port(10000), p2pd.Range(30000, 30100)}
	fmt.Println(ps, ps.Count(), ps.Validate())

	parsed, err := p2pd.ParsePorts("10000, 30000-30100")
	fmt.Println(parsed, err)

	_, err = p2pd.ParsePorts("30100-30000")
	fmt.Println(errors.Is(err, p2pd.ErrBadPort))
	// Output:
	// 10000,30000-30100 102 <nil>
	// 10000,30000-30100 <nil>
	// true
}
