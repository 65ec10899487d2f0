package p2pd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
)

func TestDialErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Dial(ctx, TCP, Route{Family: IPv6}, "127.0.0.1", 1, nil); !errors.Is(err, ErrFamilyUnsupported) {
		t.Fatalf("family mismatch: %v", err)
	}
	if _, err := Dial(ctx, TCP, Route{}, "127.0.0.1", 1, &PipeConfig{Framing: 99}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad framing: %v", err)
	}
	// Nobody listens on the port a closed listener had.
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if _, err := Dial(ctx, TCP, Route{}, "127.0.0.1", uint16(port), nil); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("refused: %v", err)
	}
}

// TestDialErrorTyped: every error of Dial is a *DialError naming what was
// dialled, from where when a local address was asked for, and why, once.
func TestDialErrorTyped(t *testing.T) {
	ctx := context.Background()
	var nilCtx context.Context
	srv := listen(t, TCP, loopRoute(t, IPv4), nil)
	from := srv.LocalAddr() // bound by srv: taken
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	refused := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	ln.Close()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		r    Route
		port uint16
		is   error
		want string
	}{
		{"nil context", nilCtx, Route{}, 9, ErrInvalid, "p2pd: dial TCP 127.0.0.1:9: invalid value: nil context"},
		{"port 0", ctx, Route{}, 0, ErrInvalid, "p2pd: dial TCP 127.0.0.1:0: invalid value: port 0"},
		{"local address in use", ctx, Route{Family: IPv4, Bound: from}, 9, ErrAddrInUse,
			fmt.Sprintf("p2pd: dial TCP 127.0.0.1:9 from %v: address already in use", from)},
		{"refused", ctx, Route{}, refused, syscall.ECONNREFUSED, fmt.Sprintf("p2pd: dial TCP 127.0.0.1:%d: connection refused", refused)},
	} {
		_, err := Dial(tc.ctx, TCP, tc.r, "127.0.0.1", tc.port, nil)
		var de *DialError
		if !errors.As(err, &de) || !errors.Is(err, tc.is) {
			t.Fatalf("%s: %v, want a *DialError wrapping %v", tc.name, err, tc.is)
		}
		if de.Proto != TCP || de.Host != "127.0.0.1" || de.Port != tc.port || de.Local != tc.r.Bound {
			t.Errorf("%s: %+v", tc.name, de)
		}
		if runtime.GOOS == "linux" && err.Error() != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, err, tc.want)
		}
	}
}

// TestListenDialRoute: Listen and Dial take a route's local address alike
// (its bound address, else its first NIC IP with port 0); a route with no
// address, the zero Route included, is refused by Listen (ErrNoAddress)
// and leaves the choice to the system in Dial.
func TestListenDialRoute(t *testing.T) {
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	nicIP := lo
	if runtime.GOOS == "linux" {
		nicIP = netip.MustParseAddr("127.0.0.2") // on Linux all of 127/8 is local: not the system's choice
	}
	nic := Route{Family: IPv4, Interface: "lo", NIC: []netip.Addr{nicIP}}
	for _, tc := range []struct {
		name      string
		r         Route
		local     netip.Addr // what both bind; invalid: Listen refuses, the system chooses for Dial
		wantRoute Route      // Dial's pipe's route, but for Bound
	}{
		{"zero Route", Route{}, netip.Addr{}, Route{Family: IPv4}},
		{"family only", Route{Family: IPv4}, netip.Addr{}, Route{Family: IPv4}},
		{"NIC IP", nic, nicIP, nic},
		{"bound", Route{Family: IPv4, Bound: netip.AddrPortFrom(nicIP, 0)}, nicIP, Route{Family: IPv4}},
	} {
		for _, proto := range []Proto{TCP, UDP} {
			name := fmt.Sprintf("%s/%v", tc.name, proto)
			l, err := Listen(ctx, proto, tc.r, nil)
			if !tc.local.IsValid() {
				var be *BindError
				if !errors.As(err, &be) || !errors.Is(err, ErrNoAddress) {
					t.Fatalf("%s: Listen: %v, want a *BindError wrapping ErrNoAddress", name, err)
				}
			} else {
				if err != nil {
					t.Fatalf("%s: Listen: %v", name, err)
				}
				if got := l.LocalAddr().Addr(); got != tc.local {
					t.Errorf("%s: Listen bound %v, want %v", name, got, tc.local)
				}
				l.Close()
			}
			srv := listen(t, proto, loopRoute(t, IPv4), nil)
			cli, err := Dial(ctx, proto, tc.r, "127.0.0.1", srv.LocalAddr().Port(), nil)
			if err != nil {
				t.Fatalf("%s: Dial: %v", name, err)
			}
			want := tc.local
			if !want.IsValid() {
				want = lo // what the system chooses to reach 127.0.0.1
			}
			if got := cli.LocalAddr().Addr(); got != want {
				t.Errorf("%s: Dial from %v, want %v", name, got, want)
			}
			got := cli.Route()
			if got.Bound != cli.LocalAddr() || got.Family != tc.wantRoute.Family || got.Interface != tc.wantRoute.Interface || len(got.NIC) != len(tc.wantRoute.NIC) {
				t.Errorf("%s: Dial's route %v, want %v bound to %v", name, got, tc.wantRoute, cli.LocalAddr())
			}
			cli.Close()
			srv.Close()
		}
	}
}
