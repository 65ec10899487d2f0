// Package stun finds the external addresses of a host's NIC IPs with STUN
// (RFC 8489 Binding requests over UDP) and classifies the NAT in front of
// them (RFC 5780).
//
// A [Resolver] is a [p2pd.ExtResolver]: pass it to [p2pd.Interface.Resolve]
// and the interface's routes carry the EXT IPs that the servers agree on,
// which ListenAll's listeners and [p2pd.Daemon.Endpoints] then report.
//
//	res := &stun.Resolver{Servers: []string{"stun1.example.net", "stun2.example.net"}}
//	if err := ifc.Resolve(ctx, res); err != nil {
//		return err
//	}
//
// It is a package of its own so that a program that does not use STUN does
// not link a STUN codec: package p2pd knows only the ExtResolver interface.
package stun
