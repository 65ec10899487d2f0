// Command ifaces prints the machine's interfaces the way a p2pd daemon sees
// them: addresses with scope and state, the families each can serve, its
// routes (NIC IPs and EXT IPs), and the default interface per family.
//
//	go run ./examples/ifaces          # a readable listing
//	go run ./examples/ifaces -json    # the JSON form, loadable with json.Unmarshal
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/p2pd/p2pd"
)

func main() {
	asJSON := flag.Bool("json", false, "print the interfaces as JSON")
	flag.Parse()

	list, err := p2pd.Interfaces()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	for _, f := range []p2pd.Family{p2pd.IPv4, p2pd.IPv6} {
		if ifc, err := p2pd.DefaultInterface(f); err == nil {
			fmt.Printf("default %s interface: %s\n", f, ifc.Name)
		} else {
			fmt.Printf("default %s interface: none (%v)\n", f, err)
		}
	}
	for _, ifc := range list {
		fmt.Printf("\n%d: %s <%v> mtu %d", ifc.Index, ifc.Name, ifc.Flags, ifc.MTU)
		if len(ifc.HardwareAddr) > 0 {
			fmt.Printf(" hw %v", ifc.HardwareAddr)
		}
		fmt.Printf("\n   serves: %v\n", ifc.Supported())
		for _, a := range ifc.Addrs {
			fmt.Printf("   addr  %-40s %-10s %s\n", a.Prefix(), a.Scope(), a.Flags)
		}
		for _, f := range []p2pd.Family{p2pd.IPv4, p2pd.IPv6} {
			for i, r := range ifc.Routes(f) {
				fmt.Printf("   route %s[%d] nic=%v ext=%v\n", f, i, r.NIC, r.Ext)
			}
		}
	}
}
