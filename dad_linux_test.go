package p2pd

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// dadNet returns host a linked to host b over veth with DAD on (carrier,
// so DAD runs and takes its second or two).
func dadNet(t *testing.T) (a, b *testnet.Host) {
	n := testnet.New(t)
	a, b = n.AddHost("a"), n.AddHost("b")
	n.Link(a, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.90.0.1/24"}},
		b, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.90.0.2/24"}})
	return a, b
}

// addTentative adds an IPv6 address with DAD on and checks it is
// tentative right after.
func addTentative(t *testing.T, h *testnet.Host, cidr string) {
	t.Helper()
	h.IP(t, "addr", "add", cidr, "dev", "eth1")
	out := h.IP(t, "-6", "addr", "show", "dev", "eth1")
	if !strings.Contains(string(out), "tentative") {
		t.Fatalf("%s is not tentative right after being added:\n%s", cidr, out)
	}
}

func TestListenWaitsForDAD(t *testing.T) {
	a, _ := dadNet(t)
	addTentative(t, a, "2001:db8:90::1/64")
	r := Route{Family: IPv6, NIC: []netip.Addr{netip.MustParseAddr("2001:db8:90::1")}}
	for _, proto := range []Proto{TCP, UDP} {
		var p *Pipe
		var err error
		start := time.Now()
		a.Do(t, func() { p, err = Listen(context.Background(), proto, r, &PipeConfig{OnMsg: echoCB}) })
		if err != nil {
			t.Fatalf("%v on a tentative address: %v", proto, err)
		}
		t.Logf("%v bound after %v", proto, time.Since(start).Round(time.Millisecond))
		p.Close()
	}
}

func TestListenTentativeNoWait(t *testing.T) {
	a, _ := dadNet(t)
	addTentative(t, a, "2001:db8:90::2/64")
	r := Route{Family: IPv6, NIC: []netip.Addr{netip.MustParseAddr("2001:db8:90::2")}}
	var p *Pipe
	var err error
	a.Do(t, func() { p, err = Listen(context.Background(), TCP, r, &PipeConfig{DADWait: -1}) })
	var be *BindError
	if !errors.Is(err, ErrTentative) || !errors.As(err, &be) {
		t.Fatalf("DADWait -1 on a tentative address: %v, want a *BindError wrapping ErrTentative", err)
	}
	// FreeBind binds at once.
	a.Do(t, func() { p, err = Listen(context.Background(), UDP, r, &PipeConfig{FreeBind: true}) })
	if err != nil {
		t.Fatalf("FreeBind on a tentative address: %v", err)
	}
	p.Close()
}

func TestListenDADFailed(t *testing.T) {
	a, b := dadNet(t)
	b.AddAddr(t, "eth1", "2001:db8:90::5/64", true) // b holds it already
	a.IP(t, "addr", "add", "2001:db8:90::5/64", "dev", "eth1")
	r := Route{Family: IPv6, NIC: []netip.Addr{netip.MustParseAddr("2001:db8:90::5")}}
	var err error
	start := time.Now()
	a.Do(t, func() { _, err = Listen(context.Background(), TCP, r, nil) })
	if !errors.Is(err, ErrDADFailed) {
		t.Fatalf("a duplicate address: %v, want ErrDADFailed", err)
	}
	t.Logf("reported after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
