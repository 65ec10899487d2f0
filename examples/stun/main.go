// Command stun resolves the external addresses of the default interface's
// routes with STUN and prints them. It contacts only the servers it is
// given: there is no default server.
//
//	go run ./examples/stun -servers 192.0.2.10:3478,198.51.100.20:3478
//	go run ./examples/stun -servers stun.example.org,stun.example.net:3478 -agree 2
//	go run ./examples/stun -servers 192.0.2.10:3478 -classify   # RFC 5780 NAT behaviour too
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/stun"
)

func main() {
	servers := flag.String("servers", "", "comma-separated STUN servers (ip:port, [ipv6]:port, host:port); required")
	agree := flag.Int("agree", 0, "servers that must agree on an EXT IP (0: 2 when 2+ servers of a family, else 1)")
	timeout := flag.Duration("timeout", stun.DefaultTimeout, "bound of one lookup")
	iface := flag.String("iface", "", "interface name (default: the default interface)")
	classify := flag.Bool("classify", false, "also classify the NAT of each route's first NIC IP (RFC 5780) with the first server of its family")
	flag.Parse()
	if *servers == "" {
		fmt.Fprintln(os.Stderr, "stun: give STUN servers with -servers; none is contacted by default")
		flag.Usage()
		os.Exit(2)
	}

	var ifc *p2pd.Interface
	var err error
	if *iface != "" {
		ifc, err = p2pd.InterfaceByName(*iface)
	} else {
		ifc, err = p2pd.DefaultInterface(p2pd.AnyFamily)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	res := &stun.Resolver{Servers: strings.Split(*servers, ","), Agree: *agree, Timeout: *timeout}
	ctx, cancel := context.WithTimeout(context.Background(), 4**timeout)
	defer cancel()
	start := time.Now()
	if err := ifc.Resolve(ctx, res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("interface %s, resolved in %v\n", ifc.Name, time.Since(start).Round(time.Millisecond))
	for _, f := range []p2pd.Family{p2pd.IPv4, p2pd.IPv6} {
		for i, r := range ifc.Routes(f) {
			fmt.Printf("route %s[%d] nic=%v ext=%v\n", f, i, r.NIC, r.Ext)
			if !r.ExtAddr().IsValid() {
				fmt.Printf("   EXT IP unknown: %v\n", res.Err(r.Addr()))
			}
			if *classify {
				classifyRoute(ctx, res, r)
			}
		}
	}
}

func classifyRoute(ctx context.Context, res *stun.Resolver, r p2pd.Route) {
	for _, s := range res.Servers {
		isV6 := strings.HasPrefix(s, "[") || strings.Count(s, ":") > 1
		if isV6 != (r.Family == p2pd.IPv6) {
			continue
		}
		b, err := res.ClassifyNAT(ctx, r.Addr(), s)
		if err != nil {
			fmt.Printf("   NAT: %v\n", err)
		} else {
			fmt.Printf("   NAT: %v\n", b)
		}
		return
	}
}
