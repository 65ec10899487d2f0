// Package p2pd runs servers that listen on many interfaces, addresses, ports
// and protocols at once, on IPv4 and IPv6, on the LAN and from outside. It is
// the Daemon of P2PD, the Python peer-to-peer networking library, in Go.
//
// # Daemons
//
// A [Daemon] is a server made of many listeners whose messages go to a
// [MsgCallback]. [Daemon.ListenAll] expands targets (interfaces, routes,
// route pools) × ports × protocols × address families into listeners; IPv6
// is served twice, on the global address and on the link-local one with its
// zone, so a server is reachable from outside and on the LAN. P2PD's
// "subclass Daemon and define msg_cb" is, in Go, a type that embeds a
// Daemon and defines MsgCB:
//
//	type Echo struct{ p2pd.Daemon }
//
//	func (e *Echo) MsgCB(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { p.Send(msg, from) }
//
//	e := new(Echo)
//	e.OnMsg = e
//	defer e.Close()
//	ports, _ := p2pd.ParsePorts("10000,30000-30100")
//	_, err := e.ListenAll(ctx, []p2pd.Target{ifc}, ports, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
//
// A call may also carry its own callback and error_on_af, as P2PD's
// listen_all(..., msg_cb, error_on_af) does:
//
//	d.ListenAll(ctx, targets, ports, protos, p2pd.AnyFamily, p2pd.MsgCB(cb), p2pd.ErrorOnAF(true))
//
// [Daemon.ListenSpecific] binds routes exactly as bound (the wildcard, the
// loopback), and [Daemon.Lookup] finds a listener by family, protocol, port
// and address.
//
// A callback learns who sent each message and where it arrived from a
// [Peer]: a small value that it may keep and answer later, from any
// goroutine, with [Pipe.Send]; the reply leaves from the address the peer
// wrote to, also on a listener bound to the wildcard.
//
// [Daemon.Close] stops at once and waits for nothing, so any callback may
// call it; [Daemon.Shutdown] stops gracefully and waits, within its
// context, for everything the daemon ran to end.
//
// # Pipes
//
// Every message is sent and received through a [Pipe]: the same API for TCP
// and UDP, IPv4 and IPv6, client and server. [Listen] opens a server pipe on
// a bound route, [Dial] a client pipe. Messages reach the pipe's
// MsgCallback, and subscriptions ([Pipe.Subscribe], [Pipe.Recv]) for code
// that prefers to pull; a protocol sharing a listener's socket takes its
// own messages first ([Pipe.Intercept]). TCP messages are whatever one read
// returns, or framed by newlines or length prefixes ([Framing]).
//
// Subpackages add what the core does not need: stun (external addresses,
// NAT classification), reach (port mappings and pinholes on the home
// router, each listener's own NAT mapping) and systemd (socket activation,
// sd_notify).
//
// # Limits, faults and statistics
//
// The defaults are safe for a server facing the Internet: a listener holds
// at most [DefaultMaxConns] connections and a daemon [DefaultDaemonMaxConns]
// (a newcomer to a full server takes the slot of the connection silent the
// longest, or is closed at once); an accepted connection that sends nothing
// for [DefaultIdleTimeout] is closed, and so is one that takes more than
// [DefaultReadTimeout] to deliver a framed message, or whose peer takes
// none of a reply for [DefaultWriteTimeout]; a framed message is at most
// [DefaultMaxMsgSize], and a connection holds memory only for the bytes of
// a partial frame it received, [DefaultMaxBuffered] at most over a
// listener's connections (more closes them); subscription and accept
// queues are bounded. A panicking callback costs one message. Failed
// accepts (out of descriptors) back off up to a second. [Pipe.Stats] and
// [Daemon.Stats] count connections, rejections, evictions, timeouts,
// connections over the budget, accept errors, datagrams the kernel
// dropped, replies refused, messages nothing took and panics.
//
// A daemon checks every [DefaultWatchInterval] that its listeners'
// addresses are still on an interface that is up, and reports changes to
// Daemon.OnEvent ([EventFailed] with [ErrAddrGone] or [ErrLinkDown], then
// [EventRestored]) and to its log.
//
// p2pd creates no file: no lock, pid or runtime file. A second instance on
// the same ports is refused by the kernel ([ErrAddrInUse]), and a crashed
// one leaves nothing behind.
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
// [Interface.Resolve] is called with a resolver that asks the outside world,
// such as the STUN one of package github.com/p2pd/p2pd/stun.
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
