package rtnl

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

var (
	v4a  = netip.MustParseAddr("192.0.2.10")
	v4b  = netip.MustParseAddr("192.0.2.20")
	v6a  = netip.MustParseAddr("2001:db8::10")
	v6b  = netip.MustParseAddr("2001:db8::20")
	v6ll = netip.MustParseAddr("fe80::1")
)

// Messages reused by several cases.
var (
	addr4 = nlmsg(rtmNewAddr, ifaddrmsg(FamilyIPv4, 24, FlagPermanent, ScopeUniverse, 3),
		attr(ifaAddress, ip("192.0.2.10")), attr(ifaLocal, ip("192.0.2.10")),
		attr(ifaLabel, []byte("eth0:1\x00")), attr(ifaCacheinfo, cacheinfo(Forever, Forever)))
	want4 = Addr{Family: FamilyIPv4, PrefixLen: 24, Flags: FlagPermanent, Scope: ScopeUniverse, Index: 3,
		Local: v4a, Label: "eth0:1", Preferred: Forever, Valid: Forever}
	addr6 = nlmsg(rtmNewAddr, ifaddrmsg(FamilyIPv6, 64, 0, ScopeLink, 7),
		attr(ifaAddress, ip("fe80::1")), attr(ifaCacheinfo, cacheinfo(100, 200)))
	want6 = Addr{Family: FamilyIPv6, PrefixLen: 64, Scope: ScopeLink, Index: 7, Local: v6ll, Preferred: 100, Valid: 200}
)

type addrCase struct {
	name    string
	in      []byte
	want    []Addr
	wantErr string        // substring of the error; "" for no error
	errno   syscall.Errno // wrapped errno, when nonzero
}

var addrCases = []addrCase{
	{name: "empty", in: nil},
	{name: "done only", in: done()},
	{name: "ipv4 with label and cacheinfo", in: cat(addr4, done()), want: []Addr{want4}},
	{name: "ipv6 address only", in: cat(addr6, done()), want: []Addr{want6}},
	{name: "no done", in: addr6, want: []Addr{want6}},
	{
		name: "IFA_FLAGS overrides ifa_flags",
		in: nlmsg(rtmNewAddr, ifaddrmsg(FamilyIPv6, 64, FlagPermanent|FlagTentative, ScopeUniverse, 2),
			attr(ifaAddress, ip("2001:db8::10")), attr(ifaFlags, le32(FlagManageTempAddr|FlagNoPrefixRoute|FlagNoDAD))),
		want: []Addr{{Family: FamilyIPv6, PrefixLen: 64, Flags: FlagManageTempAddr | FlagNoPrefixRoute | FlagNoDAD, Index: 2, Local: v6a}},
	},
	{
		name: "ifa_flags without IFA_FLAGS",
		in: nlmsg(rtmNewAddr, ifaddrmsg(FamilyIPv6, 64, FlagTentative|FlagTemporary|FlagDeprecated, ScopeUniverse, 2),
			attr(ifaAddress, ip("2001:db8::10"))),
		want: []Addr{{Family: FamilyIPv6, PrefixLen: 64, Flags: FlagTentative | FlagTemporary | FlagDeprecated, Index: 2, Local: v6a}},
	},
	{
		name: "point-to-point local and peer",
		in: nlmsg(rtmNewAddr, ifaddrmsg(FamilyIPv4, 32, 0, ScopeUniverse, 9),
			attr(ifaAddress, ip("192.0.2.20")), attr(ifaLocal, ip("192.0.2.10"))),
		want: []Addr{{Family: FamilyIPv4, PrefixLen: 32, Index: 9, Local: v4a, Peer: v4b}},
	},
	{
		name: "ipv6 peer",
		in: nlmsg(rtmNewAddr, ifaddrmsg(FamilyIPv6, 128, 0, ScopeUniverse, 9),
			attr(ifaLocal, ip("2001:db8::10")), attr(ifaAddress, ip("2001:db8::20"))),
		want: []Addr{{Family: FamilyIPv6, PrefixLen: 128, Index: 9, Local: v6a, Peer: v6b}},
	},
	{
		name: "local only",
		in:   nlmsg(rtmNewAddr, ifaddrmsg(FamilyIPv4, 8, 0, ScopeHost, 1), attr(ifaLocal, ip("192.0.2.10"))),
		want: []Addr{{Family: FamilyIPv4, PrefixLen: 8, Scope: ScopeHost, Index: 1, Local: v4a}},
	},
	{
		name: "label without NUL, unknown attribute, nested flag bit",
		in: nlmsg(rtmNewAddr, ifaddrmsg(FamilyIPv4, 24, 0, 0, 1),
			attr(ifaLabel, []byte("lo")), attr(99, []byte{1, 2, 3}), attr(0x8000|ifaAddress, ip("192.0.2.10"))),
		want: []Addr{{Family: FamilyIPv4, PrefixLen: 24, Index: 1, Local: v4a, Label: "lo"}},
	},
	{
		name: "last message and attribute without padding",
		in: cat(addr6, nlmsgf(rtmNewAddr, 0, 0, cat(ifaddrmsg(FamilyIPv4, 24, 0, 0, 1),
			attr(ifaAddress, ip("192.0.2.10")), rawAttr(5, ifaLabel, []byte("x"))))[:16+8+8+5]),
		want: []Addr{want6, {Family: FamilyIPv4, PrefixLen: 24, Index: 1, Local: v4a, Label: "x"}},
	},
	{
		name: "other types and families skipped",
		in: cat(nlmsg(16, make([]byte, 16)), nlmsg(1), nlmsg(rtmNewAddr, ifaddrmsg(7, 0, 0, 0, 1), ip("192.0.2.10")),
			nlmsg(rtmNewAddr, ifaddrmsg(28, 0, 0, 0, 1), rawAttr(0, 0, nil)), addr4, done()),
		want: []Addr{want4},
	},
	{name: "ack skipped", in: cat(nlerr(0), addr4), want: []Addr{want4}},
	{name: "done in the middle stops", in: cat(addr4, done(), addr6, []byte{1, 2, 3}), want: []Addr{want4}},
	{name: "done without payload", in: cat(addr4, nlmsg(nlmsgDone), addr6), want: []Addr{want4}},
	{name: "netlink error", in: cat(addr4, nlerr(int32(syscall.EPERM)), addr6), wantErr: "netlink error", errno: syscall.EPERM},
	{name: "dump error in done", in: cat(addr4, doneErr(int32(syscall.EINTR))), wantErr: "dump error", errno: syscall.EINTR},

	// Malformed input.
	{name: "truncated netlink header", in: cat(addr4, addr6[:10]), wantErr: "truncated netlink header"},
	{name: "netlink length 0", in: cat(le32(0), make([]byte, 12)), wantErr: "bad netlink message length 0"},
	{name: "netlink length below header", in: cat(le32(15), make([]byte, 12)), wantErr: "bad netlink message length 15"},
	{name: "netlink length past end", in: addr4[:len(addr4)-4], wantErr: "bad netlink message length"},
	{name: "truncated netlink error", in: nlmsg(nlmsgError, []byte{1, 0}), wantErr: "truncated netlink error"},
	{name: "truncated ifaddrmsg", in: nlmsg(rtmNewAddr, []byte{2, 24, 0, 0}), wantErr: "truncated ifaddrmsg"},
	{name: "attribute length 0", in: nlmsg(rtmNewAddr, ifaddrmsg(2, 24, 0, 0, 1), rawAttr(0, ifaAddress, ip("192.0.2.10"))), wantErr: "bad attribute length 0"},
	{name: "attribute length 3", in: nlmsg(rtmNewAddr, ifaddrmsg(2, 24, 0, 0, 1), rawAttr(3, ifaAddress, ip("192.0.2.10"))), wantErr: "bad attribute length 3"},
	{name: "attribute length past end", in: nlmsg(rtmNewAddr, ifaddrmsg(2, 24, 0, 0, 1), rawAttr(12, ifaAddress, ip("192.0.2.10"))), wantErr: "bad attribute length 12"},
	{name: "truncated attribute header", in: nlmsg(rtmNewAddr, ifaddrmsg(2, 24, 0, 0, 1), []byte{8, 0}), wantErr: "truncated attribute header"},
	{name: "ipv4 address of 16 bytes", in: nlmsg(rtmNewAddr, ifaddrmsg(2, 24, 0, 0, 1), attr(ifaAddress, ip("2001:db8::1"))), wantErr: "IFA_ADDRESS: 16 bytes for family 2"},
	{name: "ipv6 local of 4 bytes", in: nlmsg(rtmNewAddr, ifaddrmsg(10, 64, 0, 0, 1), attr(ifaLocal, ip("192.0.2.1"))), wantErr: "IFA_LOCAL: 4 bytes for family 10"},
	{name: "empty address", in: nlmsg(rtmNewAddr, ifaddrmsg(10, 64, 0, 0, 1), attr(ifaAddress)), wantErr: "IFA_ADDRESS: 0 bytes"},
	{name: "short IFA_FLAGS", in: nlmsg(rtmNewAddr, ifaddrmsg(10, 64, 0, 0, 1), attr(ifaFlags, []byte{1, 0})), wantErr: "IFA_FLAGS: 2 bytes"},
	{name: "short IFA_CACHEINFO", in: nlmsg(rtmNewAddr, ifaddrmsg(10, 64, 0, 0, 1), attr(ifaCacheinfo, le32(1), le32(2))), wantErr: "IFA_CACHEINFO: 8 bytes"},
}

func TestParseAddrs(t *testing.T) {
	for _, tc := range addrCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAddrs(tc.in)
			checkErr(t, err, tc.wantErr, tc.errno)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseAddrs:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string, errno syscall.Errno) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want == "":
		return
	case err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case !strings.HasPrefix(err.Error(), "rtnl: ") || !strings.Contains(err.Error(), want):
		t.Errorf("error %q, want one starting with \"rtnl: \" containing %q", err, want)
	}
	if errno != 0 && !errors.Is(err, errno) {
		t.Errorf("error %v does not wrap %v", err, errno)
	}
}

var (
	route4 = nlmsg(rtmNewRoute, rtmsg(FamilyIPv4, 0, 0, 0, TableMain, 3, ScopeUniverse, TypeUnicast, 0),
		attr(rtaTable, le32(TableMain)), attr(rtaGateway, ip("192.0.2.1")), attr(rtaOIF, le32(4)), attr(rtaPriority, le32(100)))
	wantRoute4 = Route{Family: FamilyIPv4, Table: TableMain, Protocol: 3, Type: TypeUnicast,
		Gateway: netip.MustParseAddr("192.0.2.1"), OutIndex: 4, Priority: 100}
	route6 = nlmsg(rtmNewRoute, rtmsg(FamilyIPv6, 64, 0, 0, TableLocal, 2, ScopeHost, TypeLocal, 0x200),
		attr(rtaDst, ip("2001:db8::")), attr(rtaPrefSrc, ip("2001:db8::10")), attr(rtaOIF, le32(1)))
	wantRoute6 = Route{Family: FamilyIPv6, DstLen: 64, Table: TableLocal, Protocol: 2, Scope: ScopeHost, Type: TypeLocal, Flags: 0x200,
		Dst: netip.MustParseAddr("2001:db8::"), PrefSrc: v6a, OutIndex: 1}
)

type routeCase struct {
	name    string
	in      []byte
	want    []Route
	wantErr string
	errno   syscall.Errno
}

var routeCases = []routeCase{
	{name: "empty", in: nil},
	{name: "ipv4 default", in: cat(route4, done()), want: []Route{wantRoute4}},
	{name: "ipv6 local table", in: cat(route6, done()), want: []Route{wantRoute6}},
	{
		name: "RTA_TABLE overrides rtm_table, src and tos",
		in: nlmsg(rtmNewRoute, rtmsg(FamilyIPv4, 24, 32, 0x10, 252, 4, ScopeLink, TypeUnicast, 0),
			attr(rtaTable, le32(1000)), attr(rtaDst, ip("198.51.100.0")), attr(rtaSrc, ip("192.0.2.10"))),
		want: []Route{{Family: FamilyIPv4, DstLen: 24, SrcLen: 32, TOS: 0x10, Table: 1000, Protocol: 4, Scope: ScopeLink, Type: TypeUnicast,
			Dst: netip.MustParseAddr("198.51.100.0"), Src: v4a}},
	},
	{
		name: "rtm_table without RTA_TABLE",
		in:   nlmsg(rtmNewRoute, rtmsg(FamilyIPv6, 0, 0, 0, 100, 0, 0, 7, 0)),
		want: []Route{{Family: FamilyIPv6, Table: 100, Type: 7}},
	},
	{
		name: "ipv4 multipath with an ipv6 nexthop",
		in: nlmsg(rtmNewRoute, rtmsg(FamilyIPv4, 16, 0, 0, TableMain, 4, 0, TypeUnicast, 0),
			attr(rtaDst, ip("10.91.0.0")), attr(rtaPriority, le32(5)), attr(rtaMultipath,
				rtnh(0, 2, 4, attr(rtaGateway, ip("192.0.2.1"))),
				rtnh(1, 0, 5, attr(rtaVia, le16(FamilyIPv6), ip("fe80::1"))),
				rtnh(0, 255, 6),
			)),
		want: []Route{{Family: FamilyIPv4, DstLen: 16, Table: TableMain, Protocol: 4, Type: TypeUnicast,
			Dst: netip.MustParseAddr("10.91.0.0"), Priority: 5, Nexthops: []Nexthop{
				{Gateway: netip.MustParseAddr("192.0.2.1"), OutIndex: 4, Weight: 3},
				{Gateway: v6ll, OutIndex: 5, Weight: 1, Flags: 1},
				{OutIndex: 6, Weight: 256},
			}}},
	},
	{
		name: "ipv6 multipath, last entry unpadded",
		in: nlmsg(rtmNewRoute, rtmsg(FamilyIPv6, 0, 0, 0, TableMain, 3, 0, TypeUnicast, 0), attr(rtaMultipath,
			rtnh(0, 0, 4, attr(rtaGateway, ip("fe80::1"))), rtnh(0, 1, 4, attr(rtaGateway, ip("2001:db8::20"))))),
		want: []Route{{Family: FamilyIPv6, Table: TableMain, Protocol: 3, Type: TypeUnicast, Nexthops: []Nexthop{
			{Gateway: v6ll, OutIndex: 4, Weight: 1}, {Gateway: v6b, OutIndex: 4, Weight: 2}}}},
	},
	{
		name: "empty multipath, RTA_VIA of another family",
		in: nlmsg(rtmNewRoute, rtmsg(FamilyIPv4, 0, 0, 0, TableMain, 3, 0, TypeUnicast, 0),
			attr(rtaMultipath), attr(rtaVia, le16(28), []byte{0, 1, 2, 3})),
		want: []Route{{Family: FamilyIPv4, Table: TableMain, Protocol: 3, Type: TypeUnicast}},
	},
	{
		name: "other families skipped",
		in: cat(nlmsg(rtmNewRoute, rtmsg(128, 32, 32, 0, TableDefault, 0, 0, 0, 0), attr(rtaDst, ip("2001:db8::1"))),
			nlmsg(rtmNewRoute, rtmsg(28, 20, 0, 0, TableMain, 0, 0, 0, 0), []byte{1}), route4),
		want: []Route{wantRoute4},
	},
	{name: "done in the middle stops", in: cat(route6, done(), route4), want: []Route{wantRoute6}},
	{name: "netlink error", in: cat(route4, nlerr(int32(syscall.ENOBUFS))), wantErr: "netlink error", errno: syscall.ENOBUFS},

	// Malformed input.
	{name: "truncated netlink header", in: route4[:15], wantErr: "truncated netlink header"},
	{name: "netlink length past end", in: cat(route4[:len(route4)-1]), wantErr: "bad netlink message length"},
	{name: "truncated rtmsg", in: nlmsg(rtmNewRoute, []byte{2, 0, 0, 0, 254, 0, 0, 1}), wantErr: "truncated rtmsg"},
	{name: "attribute length 0", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), rawAttr(0, rtaOIF, le32(1))), wantErr: "bad attribute length 0"},
	{name: "attribute length 2", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), rawAttr(2, rtaOIF, le32(1))), wantErr: "bad attribute length 2"},
	{name: "attribute length past end", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), rawAttr(9, rtaOIF, le32(1))), wantErr: "bad attribute length 9"},
	{name: "short RTA_OIF", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaOIF, []byte{1})), wantErr: "RTA_OIF: 1 bytes"},
	{name: "short RTA_PRIORITY", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaPriority)), wantErr: "RTA_PRIORITY: 0 bytes"},
	{name: "short RTA_TABLE", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaTable, []byte{1, 2})), wantErr: "RTA_TABLE: 2 bytes"},
	{name: "ipv4 gateway of 16 bytes", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaGateway, ip("fe80::1"))), wantErr: "RTA_GATEWAY: 16 bytes for family 2"},
	{name: "ipv6 dst of 4 bytes", in: nlmsg(rtmNewRoute, rtmsg(10, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaDst, ip("192.0.2.1"))), wantErr: "RTA_DST: 4 bytes for family 10"},
	{name: "ipv6 prefsrc of 5 bytes", in: nlmsg(rtmNewRoute, rtmsg(10, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaPrefSrc, []byte{1, 2, 3, 4, 5})), wantErr: "RTA_PREFSRC: 5 bytes"},
	{name: "truncated RTA_VIA", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaVia, []byte{10})), wantErr: "RTA_VIA: 1 bytes"},
	{name: "RTA_VIA address of wrong size", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaVia, le16(10), ip("192.0.2.1"))), wantErr: "RTA_VIA: 4 bytes for family 10"},
	{name: "rtnexthop length 0", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaMultipath, make([]byte, 8))), wantErr: "bad rtnexthop length 0"},
	{
		name:    "rtnexthop length past end",
		in:      nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaMultipath, rtnh(0, 0, 1, attr(rtaGateway, ip("192.0.2.1")))[:12])),
		wantErr: "bad rtnexthop length 16",
	},
	{name: "truncated rtnexthop", in: nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaMultipath, rtnh(0, 0, 1), []byte{8, 0, 0, 0})), wantErr: "truncated rtnexthop"},
	{
		name:    "nexthop attribute length 0",
		in:      nlmsg(rtmNewRoute, rtmsg(2, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaMultipath, rtnh(0, 0, 1, rawAttr(0, rtaGateway, ip("192.0.2.1"))))),
		wantErr: "bad attribute length 0",
	},
	{
		name:    "nexthop gateway of wrong size",
		in:      nlmsg(rtmNewRoute, rtmsg(10, 0, 0, 0, 254, 0, 0, 1, 0), attr(rtaMultipath, rtnh(0, 0, 1, attr(rtaGateway, ip("192.0.2.1"))))),
		wantErr: "RTA_GATEWAY in RTA_MULTIPATH: 4 bytes for family 10",
	},
}

func TestParseRoutes(t *testing.T) {
	for _, tc := range routeCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRoutes(tc.in)
			checkErr(t, err, tc.wantErr, tc.errno)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseRoutes:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// The builder's encoders must invert the parsers, or the fuzzers' round trip
// proves nothing.
func TestEncodeRoundTrip(t *testing.T) {
	for _, tc := range addrCases {
		if tc.want == nil {
			continue
		}
		got, err := ParseAddrs(encodeAddrs(tc.want))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ParseAddrs(encodeAddrs(x)) = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	for _, tc := range routeCases {
		if tc.want == nil {
			continue
		}
		got, err := ParseRoutes(encodeRoutes(tc.want))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ParseRoutes(encodeRoutes(x)) = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestPrefix(t *testing.T) {
	tests := []struct {
		name string
		got  netip.Prefix
		want string
	}{
		{"addr", want4.Prefix(), "192.0.2.10/24"},
		{"ipv4 default", wantRoute4.Prefix(), "0.0.0.0/0"},
		{"ipv6 default", Route{Family: FamilyIPv6}.Prefix(), "::/0"},
		{"ipv6 route", wantRoute6.Prefix(), "2001:db8::/64"},
		{"bad length", Route{Family: FamilyIPv4, DstLen: 33}.Prefix(), "invalid Prefix"},
	}
	for _, tc := range tests {
		if tc.got.String() != tc.want {
			t.Errorf("%s: Prefix() = %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}
