package main

import (
	"context"
	"net/netip"

	"github.com/p2pd/p2pd"
)

// p2pdSockets is PipeConfig.Sockets (-fanout).
var p2pdSockets int

// startP2PD serves an echo daemon as a user would write it: a MsgCB that
// sends every message back (after -work), one ListenAll on a loopback route, the default
// (zero) PipeConfig but for Sockets (-fanout).
func startP2PD(ctx context.Context, proto string, addr netip.AddrPort) (func() error, error) {
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{Sockets: p2pdSockets, OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		work()
		p.Send(msg, from)
	})}}
	fam := p2pd.IPv4
	if addr.Addr().Is6() {
		fam = p2pd.IPv6
	}
	pr := p2pd.TCP
	if proto == "udp" {
		pr = p2pd.UDP
	}
	route := p2pd.Route{Family: fam, NIC: []netip.Addr{addr.Addr()}}
	if _, err := d.ListenAll(ctx, []p2pd.Target{route}, p2pd.Ports{p2pd.Port(addr.Port())}, []p2pd.Proto{pr}, fam); err != nil {
		d.Close()
		return nil, err
	}
	return func() error {
		<-ctx.Done()
		return d.Close()
	}, nil
}
