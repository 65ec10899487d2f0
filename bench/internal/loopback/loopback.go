// Package loopback holds the one address rule every bench program shares:
// traffic goes to the loopback interface only.
package loopback

import (
	"fmt"
	"net"
	"net/netip"
)

// ParseAddrPort parses "127.0.0.1:PORT" or "[::1]:PORT" and refuses any
// address that is not a loopback IP literal (host names included), so a
// benchmark can never send traffic off the machine. Port 0 is allowed.
func ParseAddrPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: want a loopback IP literal and a port, e.g. 127.0.0.1:9000: %w", s, err)
	}
	a := ap.Addr().Unmap()
	if !a.IsLoopback() || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("address %q is not a loopback address: refused (benchmarks only use 127.0.0.0/8 and ::1)", s)
	}
	return netip.AddrPortFrom(a, ap.Port()), nil
}

// Network returns "tcp4"/"udp4" or "tcp6"/"udp6" for proto ("tcp" or "udp")
// and the family of a.
func Network(proto string, a netip.Addr) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

// FreePort returns a port that is free on a for both TCP and UDP at the
// time of the call (the OS picks it; both sockets are closed again). A
// server that must know its port before binding (gnet binds one UDP socket
// per event loop) uses it for port 0.
func FreePort(a netip.Addr) (uint16, error) {
	for range 20 { // bounded: a port free for TCP is almost always free for UDP
		ln, err := net.ListenTCP(Network("tcp", a), net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			return 0, err
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		uc, err := net.ListenUDP(Network("udp", a), net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, port)))
		ln.Close()
		if err != nil {
			continue
		}
		uc.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no port free for both TCP and UDP on %v", a)
}

// ServerAddr parses a server's -addr as ParseAddrPort does, and gives port
// 0 a port that FreePort picks.
func ServerAddr(s string) (netip.AddrPort, error) {
	addr, err := ParseAddrPort(s)
	if err != nil || addr.Port() != 0 {
		return addr, err
	}
	port, err := FreePort(addr.Addr())
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr.Addr(), port), nil
}
