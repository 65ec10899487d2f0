// Package p2pd runs servers that listen on many interfaces, addresses, ports
// and protocols at once, on IPv4 and IPv6, on the LAN and from outside. It is
// the Daemon of P2PD, the Python peer-to-peer networking library, in Go.
//
// # Interfaces and routes
//
// An [Interface] is a network interface with every address and its state
// (scope, and on Linux the IPv6 flags: tentative, deprecated, temporary,
// dadfailed). [Interfaces], [InterfaceByName], [InterfaceByIndex] and
// [DefaultInterface] read them from the kernel.
//
// A [Route] maps some of an interface's own addresses (NIC IPs) to the
// addresses the outside world sees (EXT IPs), for one family. Each interface
// holds a [RoutePool] per family. [Route.Bind] turns a route into a concrete
// address to bind: the default NIC IP, the wildcard, the loopback, a given IP
// or an IPv6 link-local address with its zone.
//
//	ifc, err := p2pd.DefaultInterface(p2pd.IPv4)
//	if err != nil { ... }
//	r, err := ifc.Routes4.First()
//	b, err := r.Bind("", 8080) // b.Bound is e.g. 192.168.1.5:8080
//
// External addresses come from an [ExtResolver]; the default one,
// [OfflineResolver], knows none, so only public NIC IPs have EXT IPs until
// [Interface.Resolve] is called with a resolver that asks the outside world.
//
// Interfaces and routes encode to JSON and back, so a network view can be
// saved and loaded in a test or a config file.
//
// # Errors
//
// Errors wrap sentinels such as [ErrNoInterface], [ErrBadFamily] and
// [ErrAddrNotOnRoute]; test for them with errors.Is, and for the typed
// errors ([*InterfaceError], [*AddrError]) with errors.As.
package p2pd
