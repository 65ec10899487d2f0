package p2pd

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// udpExchange sends msg to addr over a new UDP socket and returns the reply.
func udpExchange(t *testing.T, addr netip.AddrPort, msg string) string {
	t.Helper()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor))
	c.Write([]byte(msg))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err.Error()
	}
	return string(buf[:n])
}

func tagCB(tag string) MsgCallback {
	return MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) { p.Send([]byte(tag), from) })
}

// A call's own callback serves its listeners only, and SetOnMsg, which
// replaces the Daemon's, leaves it alone.
func TestListenOptionMsgCB(t *testing.T) {
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: tagCB("d1"), Logger: quietLogger()}}
	defer d.Close()
	ctx := context.Background()
	lo := loopRoute(t, IPv4)
	lo.Bound = netip.AddrPortFrom(lo.Bound.Addr(), 0)
	def, err := d.AddListener(ctx, UDP, lo)
	if err != nil {
		t.Fatal(err)
	}
	own, err := d.AddListener(ctx, UDP, lo, MsgCB(tagCB("own")))
	if err != nil {
		t.Fatal(err)
	}
	if got := udpExchange(t, def.LocalAddr(), "x"); got != "d1" {
		t.Fatalf("default listener: %q", got)
	}
	if got := udpExchange(t, own.LocalAddr(), "x"); got != "own" {
		t.Fatalf("listener with its own callback: %q", got)
	}
	if err := d.SetOnMsg(tagCB("d2")); err != nil {
		t.Fatal(err)
	}
	if got := udpExchange(t, def.LocalAddr(), "x"); got != "d2" {
		t.Fatalf("default listener after SetOnMsg: %q", got)
	}
	if got := udpExchange(t, own.LocalAddr(), "x"); got != "own" {
		t.Fatalf("SetOnMsg replaced a call's own callback: %q", got)
	}
	// A later call without the option takes the Daemon's current one.
	later, err := d.AddListener(ctx, UDP, lo)
	if err != nil {
		t.Fatal(err)
	}
	if got := udpExchange(t, later.LocalAddr(), "x"); got != "d2" {
		t.Fatalf("later listener: %q", got)
	}
}

// A call's options override the Daemon's fields for that call only.
func TestListenOptionPolicies(t *testing.T) {
	d := &Daemon{ErrorOnAF: true, PipeConfig: PipeConfig{OnMsg: echoCB, Logger: quietLogger()}}
	defer d.Close()
	ctx := context.Background()
	lo4 := Route{Family: IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	lo6 := Route{Family: IPv6, NIC: []netip.Addr{netip.MustParseAddr("::1")}}
	both := []Target{lo4, lo6}
	if _, err := d.ListenAll(ctx, both, Ports{Port(0)}, []Proto{UDP}, IPv4); !errors.Is(err, ErrFamilyUnsupported) {
		t.Fatalf("Daemon.ErrorOnAF: %v", err)
	}
	ps, err := d.ListenAll(ctx, both, Ports{Port(0)}, []Proto{UDP}, IPv4, ErrorOnAF(false))
	if err != nil || len(ps) != 1 {
		t.Fatalf("ErrorOnAF(false): %d listeners, %v", len(ps), err)
	}
	if d.ErrorOnAF != true {
		t.Fatal("an option changed the Daemon's field")
	}
	// BestEffort per call: one bind of two fails (the port is taken).
	taken, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := uint16(taken.LocalAddr().(*net.UDPAddr).Port)
	specs := []Specific{
		{Proto: UDP, Route: Route{Family: IPv4, Bound: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}},
		{Proto: UDP, Route: Route{Family: IPv4, Bound: netip.MustParseAddrPort("127.0.0.1:0")}},
	}
	before := d.Len()
	if ps, err := d.ListenSpecific(ctx, specs); err == nil || len(ps) != 0 || d.Len() != before {
		t.Fatalf("all or nothing: %d listeners, %v", len(ps), err)
	}
	if ps, err := d.ListenSpecific(ctx, specs, BestEffort(true)); err == nil || len(ps) != 1 || d.Len() != before+1 {
		t.Fatalf("BestEffort(true): %d listeners, %v", len(ps), err)
	}
}

// Bad arguments: a nil context or a nil option is refused with ErrInvalid,
// and nothing is bound.
func TestListenNilArguments(t *testing.T) {
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	lo := loopRoute(t, IPv4)
	var nilCtx context.Context
	checks := map[string]error{}
	_, checks["ListenAll nil ctx"] = d.ListenAll(nilCtx, []Target{lo}, Ports{Port(0)}, []Proto{UDP}, IPv4)
	_, checks["ListenSpecific nil ctx"] = d.ListenSpecific(nilCtx, []Specific{{Route: lo, Proto: UDP}})
	_, checks["AddListener nil ctx"] = d.AddListener(nilCtx, UDP, lo)
	_, checks["nil option"] = d.AddListener(context.Background(), UDP, lo, nil)
	for name, err := range checks {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if d.Len() != 0 {
		t.Fatalf("%d listeners after refused calls", d.Len())
	}
	if err := d.Shutdown(nilCtx); !errors.Is(err, ErrInvalid) {
		t.Errorf("Shutdown(nil): %v", err)
	}
}
