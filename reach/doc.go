// Package reach makes a Daemon's listeners reachable from outside a home
// router, and says how: a [Mapper] asks the default gateway to map each
// IPv4 listener's port, and to open a pinhole in its firewall for each
// IPv6 one, with PCP (RFC 6887), NAT-PMP (RFC 6886, IPv4) or UPnP IGD (v1
// and v2, found by SSDP on the LAN interface only), renews the leases,
// maps them again when the gateway restarts and forgets them, and deletes
// them when the listener goes or the Mapper closes. With STUN servers it
// also learns each UDP listener's own NAT mapping through the listener's
// socket ([stun.Resolver.Probe]).
//
//	m, err := reach.Start(ctx, d, reach.Config{})
//	if err != nil {
//		return err
//	}
//	defer m.Shutdown(ctx)
//	for _, e := range m.Endpoints() {
//		fmt.Println(e) // UDP IPv4 10.0.0.2:7007 → 203.0.113.1:7007 (mapping pcp)
//	}
//
// It is a package of its own so that the core links no mapping client.
// A gateway that speaks none of the protocols costs a bounded wait
// (Config.Timeout per protocol) and is reported as ErrNoMapping in each
// Endpoint's Err; nothing hangs the daemon.
package reach
