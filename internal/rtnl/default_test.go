package rtnl

import (
	"net/netip"
	"testing"
)

func TestBestDefault(t *testing.T) {
	gw := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	def := func(prio uint32, g string, oif uint32) Route {
		return Route{Family: FamilyIPv4, Table: TableMain, Type: TypeUnicast, Priority: prio, Gateway: gw(g), OutIndex: oif}
	}
	routes := []Route{
		{Family: FamilyIPv4, Table: TableMain, Type: TypeUnicast, DstLen: 24, OutIndex: 9},        // not a default route
		{Family: FamilyIPv4, Table: 255, Type: TypeUnicast, Priority: 1, Gateway: gw("10.9.9.9")}, // local table
		def(200, "10.0.0.1", 2),
		def(100, "10.0.1.1", 3),
		{Family: FamilyIPv4, Table: TableMain, Type: TypeUnicast, Priority: 50, OutIndex: 0}, // no interface: refused by ok below
	}
	r, ok := BestDefault(routes, FamilyIPv4, func(r Route) bool { return r.OutIndex != 0 })
	if !ok || r.Gateway != gw("10.0.1.1") {
		t.Fatalf("BestDefault = %+v, %v; want the metric-100 route", r, ok)
	}
	if r, ok := BestDefault(routes, FamilyIPv4, nil); !ok || r.Priority != 50 {
		t.Fatalf("without a filter: %+v, %v", r, ok)
	}
	if _, ok := BestDefault(routes, FamilyIPv6, nil); ok {
		t.Fatal("an IPv6 default route found among IPv4 ones")
	}
}
