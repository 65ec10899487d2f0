package p2pd

// Hostile input: every public call fed invalid arguments must return a
// typed error (a sentinel for errors.Is, or a type for errors.As), never
// panic, and leave a running daemon exactly as it was: same listeners,
// no socket left behind, still echoing. TLS pipes refuse peers that do
// not speak TLS or present the wrong certificate, without ever calling the
// message callback.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// hostileEnv is what the cases of TestHostileArguments act on.
type hostileEnv struct {
	ctx        context.Context
	d          *Daemon // running, with one TCP and one UDP listener on 127.0.0.1
	closedD    *Daemon // closed
	badFrameD  *Daemon // its Pipe template has an invalid Framing
	lo4        Route   // 127.0.0.1, unbound
	loIf       *Interface
	heldPort   uint16 // a TCP port held by a plain socket on 127.0.0.1
	freePort   uint16 // a port nobody holds (at setup time)
	tcpL, udpL *Pipe  // the daemon's listeners

	udpSrv, tcpSrv             *Pipe // plain server pipes
	nsUDP6                     *Pipe // on [::] inside a namespace of its own (root only), nil otherwise
	tcpCli, udpCli, framedCli  *Pipe // live clients
	lineCli                    *Pipe
	closedUDPSrv, closedTCPSrv *Pipe
	closedTCPCli, closedUDPCli *Pipe
	closedSub                  *Sub // a subscription of closedTCPSrv, made before the close
	otherSub                   *Sub // a subscription of udpSrv
}

// hostileCase is one invalid call and the error it must give.
type hostileCase struct {
	name  string
	call  func(e *hostileEnv) error
	is    []error       // errors.Is must hold for each
	as    []any         // errors.As must hold for each (pointers to pointer types)
	errno syscall.Errno // on Linux, errors.Is(err, errno) too
	check func(t hzErrorfer, err error)
}

func hostileRoute(f Family, bound string) Route {
	return Route{Family: f, Bound: netip.MustParseAddrPort(bound)}
}

// hostileFreePort returns a loopback port that was free a moment ago, for
// TCP and UDP.
func hostileFreePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return uint16(port)
		}
	}
	t.Fatal("no free port")
	return 0
}

// hzSocketCount returns the number of sockets this process holds (Linux),
// or -1 where /proc is missing.
func hzSocketCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// hzEcho sends msg to addr over network and checks the reply (2 s).
func hzEcho(network string, addr netip.AddrPort, msg string) error {
	c, err := net.DialTimeout(network, addr.String(), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg)+16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != msg {
		return fmt.Errorf("echo %s %v: got %q, want %q", network, addr, buf[:n], msg)
	}
	return nil
}

// hzWaitNoClients waits until a TCP server pipe has no live connection (the
// server side of a closed client ends asynchronously).
func hzWaitNoClients(t testing.TB, p *Pipe) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for len(p.Clients()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%v still has %d connections", p.LocalAddr(), len(p.Clients()))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func setupHostile(t *testing.T) *hostileEnv {
	t.Helper()
	e := &hostileEnv{ctx: context.Background()}
	log := quietLogger()
	e.lo4 = Route{Family: IPv4, Interface: "lo", NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	e.loIf = &Interface{Name: "lo", Index: 1, Flags: net.FlagUp | net.FlagLoopback,
		Addrs: []IfAddr{{Addr: netip.MustParseAddr("127.0.0.1"), Bits: 8}}}
	if err := e.loIf.Resolve(e.ctx, nil); err != nil {
		t.Fatal(err)
	}

	e.d = &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Logger: log}, MaxListeners: 16}
	t.Cleanup(func() { e.d.Close() })
	lo, _ := Route{Family: IPv4}.Bind("localhost", 0)
	ps, err := e.d.ListenSpecific(e.ctx, []Specific{{Route: lo, Proto: TCP}, {Route: lo, Proto: UDP}})
	if err != nil {
		t.Fatal(err)
	}
	e.tcpL, e.udpL = ps[0], ps[1]

	e.closedD = &Daemon{PipeConfig: PipeConfig{Logger: log}}
	e.closedD.Close()
	e.badFrameD = &Daemon{PipeConfig: PipeConfig{Logger: log, Framing: 99}}
	t.Cleanup(func() { e.badFrameD.Close() })

	held, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	e.heldPort = uint16(held.Addr().(*net.TCPAddr).Port)
	e.freePort = hostileFreePort(t)

	cfg := &PipeConfig{OnMsg: echoCB, Logger: log}
	e.udpSrv = listen(t, UDP, loopRoute(t, IPv4), cfg)
	e.tcpSrv = listen(t, TCP, loopRoute(t, IPv4), cfg)
	if os.Geteuid() == 0 || os.Getenv("CI") == "true" {
		// Sends to link-local addresses stay inside this namespace: it has
		// lo and one dummy interface with a link-local address.
		n := testnet.New(t)
		h := n.AddHost("hostile")
		h.AddDummy(testnet.IfConfig{Name: "d0", NoDAD: true})
		any6, _ := Route{Family: IPv6}.Bind("*", 0)
		h.Do(t, func() { e.nsUDP6 = listen(t, UDP, any6, cfg) })
	}
	e.tcpCli = dial(t, TCP, e.tcpSrv.LocalAddr(), cfg)
	e.udpCli = dial(t, UDP, e.udpSrv.LocalAddr(), cfg)
	e.framedCli = dial(t, TCP, e.tcpSrv.LocalAddr(), &PipeConfig{Framing: FrameLength32, MaxMsgSize: 8, Logger: log})
	e.lineCli = dial(t, TCP, e.tcpSrv.LocalAddr(), &PipeConfig{Framing: FrameLine, Logger: log})
	if e.otherSub, err = e.udpSrv.Subscribe("", netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}

	e.closedUDPSrv = listen(t, UDP, loopRoute(t, IPv4), cfg)
	e.closedTCPSrv = listen(t, TCP, loopRoute(t, IPv4), cfg)
	if e.closedSub, err = e.closedTCPSrv.Subscribe("", netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	e.closedTCPCli = dial(t, TCP, e.tcpSrv.LocalAddr(), cfg)
	e.closedUDPCli = dial(t, UDP, e.udpSrv.LocalAddr(), cfg)
	waitClients := func(n int) {
		deadline := time.Now().Add(waitFor)
		for len(e.tcpSrv.Clients()) != n {
			if time.Now().After(deadline) {
				t.Fatalf("tcpSrv has %d connections, want %d", len(e.tcpSrv.Clients()), n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitClients(4)
	for _, p := range []*Pipe{e.closedUDPSrv, e.closedTCPSrv, e.closedTCPCli, e.closedUDPCli} {
		p.Close()
	}
	// The server sides of the TCP clients are settled before the cases
	// count sockets.
	waitClients(3)
	return e
}

func hostileCases() []hostileCase {
	bg := context.Background()
	var nilCtx context.Context // what a caller passes by mistake
	tcp := []Proto{TCP}
	p0 := Ports{Port(0)}
	var (
		portErr   = new(*PortError)
		bindErr   = new(*BindError)
		listenErr = new(*ListenError)
		limitErr  = new(*LimitError)
		ifErr     = new(*InterfaceError)
		addrErr   = new(*AddrError)
		dialErr   = new(*DialError)
		adoptErr  = new(*AdoptError)
	)
	llBadZone := "[fe80::1%nosuchif0]:0"
	notLocal := Route{Family: IPv4, NIC: []netip.Addr{netip.MustParseAddr("198.51.100.7")}} // TEST-NET-2: never ours
	cases := []hostileCase{
		// ---- Daemon.ListenAll ----
		{name: "ListenAll/nil targets", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.ListenAll(bg, nil, p0, tcp, AnyFamily); return err }},
		{name: "ListenAll/empty targets", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.ListenAll(bg, []Target{}, p0, tcp, AnyFamily); return err }},
		{name: "ListenAll/nil target element", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.ListenAll(bg, []Target{nil}, p0, tcp, AnyFamily); return err }},
		{name: "ListenAll/nil *Interface", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{(*Interface)(nil)}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/valid target then nil", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf, nil}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/nil ports", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error { _, err := e.d.ListenAll(bg, []Target{e.loIf}, nil, tcp, IPv4); return err }},
		{name: "ListenAll/empty ports", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, Ports{}, tcp, IPv4)
				return err
			}},
		{name: "ListenAll/reversed range", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, Ports{{20010, 20000}}, tcp, IPv4)
				return err
			}},
		{name: "ListenAll/port 0 in a range", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, Ports{{0, 5}}, tcp, IPv4)
				return err
			}},
		{name: "ListenAll/overlapping ranges", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, Ports{{1000, 1010}, Port(1005)}, tcp, IPv4)
				return err
			}},
		{name: "ListenAll/port 0 twice", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, Ports{{}, {}}, tcp, IPv4)
				return err
			}},
		{name: "ListenAll/nil protos", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.ListenAll(bg, []Target{e.loIf}, p0, nil, IPv4); return err }},
		{name: "ListenAll/proto 0", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, p0, []Proto{0}, IPv4)
				return err
			}},
		{name: "ListenAll/proto 255 after TCP", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, p0, []Proto{TCP, 255}, IPv4)
				return err
			}},
		{name: "ListenAll/family 5", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, p0, tcp, Family(5))
				return err
			}},
		{name: "ListenAll/family 255", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, p0, tcp, Family(255))
				return err
			}},
		{name: "ListenAll/route of family 0", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error {
				r := e.lo4
				r.Family = AnyFamily
				_, err := e.d.ListenAll(bg, []Target{r}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/route of family 9 in a pool", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error {
				r := e.lo4
				r.Family = 9
				_, err := e.d.ListenAll(bg, []Target{RoutePool{e.lo4, r}}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/IPv4 route holding an IPv6 NIC IP", is: []error{ErrFamilyUnsupported}, as: []any{addrErr},
			call: func(e *hostileEnv) error {
				r := Route{Family: IPv4, NIC: []netip.Addr{netip.MustParseAddr("::1")}}
				_, err := e.d.ListenAll(bg, []Target{r}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/link-local route without interface", is: []error{ErrInvalid}, as: []any{addrErr},
			call: func(e *hostileEnv) error {
				r := Route{Family: IPv6, NIC: []netip.Addr{netip.MustParseAddr("fe80::1")}}
				_, err := e.d.ListenAll(bg, []Target{r}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/link-local route on a missing interface", is: []error{ErrNoInterface}, as: []any{listenErr, bindErr, ifErr},
			call: func(e *hostileEnv) error {
				r := Route{Family: IPv6, Interface: "nosuchif0", NIC: []netip.Addr{netip.MustParseAddr("fe80::1%nosuchif0")}}
				_, err := e.d.ListenAll(bg, []Target{r}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/no address of the family", is: []error{ErrFamilyUnsupported},
			call: func(e *hostileEnv) error { _, err := e.d.ListenAll(bg, []Target{e.loIf}, p0, tcp, IPv6); return err }},
		{name: "ListenAll/interface down", is: []error{ErrFamilyUnsupported},
			call: func(e *hostileEnv) error {
				down := *e.loIf
				down.Flags = 0
				_, err := e.d.ListenAll(bg, []Target{&down}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/interface without addresses", is: []error{ErrFamilyUnsupported},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{&Interface{Name: "x", Flags: net.FlagUp}}, p0, tcp, AnyFamily)
				return err
			}},
		{name: "ListenAll/over MaxListeners", is: []error{ErrTooManyListeners}, as: []any{limitErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, Ports{{40000, 40020}}, tcp, IPv4)
				return err
			},
			check: func(t hzErrorfer, err error) {
				var le *LimitError
				errors.As(err, &le)
				if le.Want != 21 || le.Have != 2 || le.Limit != 16 {
					t.Errorf("LimitError %+v, want Want 21, Have 2, Limit 16", le)
				}
			}},
		{name: "ListenAll/port held by another socket", is: []error{ErrAddrInUse}, as: []any{listenErr, bindErr}, errno: syscall.EADDRINUSE,
			call: func(e *hostileEnv) error {
				// UDP binds, TCP does not: all or nothing closes the UDP one.
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, Ports{Port(e.heldPort)}, []Proto{UDP, TCP}, IPv4)
				return err
			},
			check: func(t hzErrorfer, err error) {
				var le *ListenError
				errors.As(err, &le)
				if le.Tried != 2 || len(le.Failed) != 1 || !le.Closed || le.Failed[0].Proto != TCP {
					t.Errorf("ListenError %+v", le)
				}
			}},
		{name: "ListenAll/address the daemon holds", is: []error{ErrAddrInUse}, as: []any{listenErr, bindErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenAll(bg, []Target{e.loIf}, Ports{Port(e.tcpL.LocalAddr().Port())}, tcp, IPv4)
				return err
			}},
		{name: "ListenAll/address not on this host", as: []any{listenErr, bindErr}, errno: syscall.EADDRNOTAVAIL,
			call: func(e *hostileEnv) error { _, err := e.d.ListenAll(bg, []Target{notLocal}, p0, tcp, IPv4); return err }},
		{name: "ListenAll/cancelled context", is: []error{context.Canceled},
			call: func(e *hostileEnv) error {
				ctx, cancel := context.WithCancel(bg)
				cancel()
				_, err := e.d.ListenAll(ctx, []Target{e.loIf}, Ports{Port(e.freePort)}, tcp, IPv4)
				return err
			}},
		{name: "ListenAll/invalid Framing in the daemon's template", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				_, err := e.badFrameD.ListenAll(bg, []Target{e.loIf}, p0, tcp, IPv4)
				return err
			}},

		// ---- Daemon.ListenSpecific ----
		{name: "ListenSpecific/nil", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.ListenSpecific(bg, nil); return err }},
		{name: "ListenSpecific/empty", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.ListenSpecific(bg, []Specific{}); return err }},
		{name: "ListenSpecific/zero Specific", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.ListenSpecific(bg, []Specific{{}}); return err }},
		{name: "ListenSpecific/zero route", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error { _, err := e.d.ListenSpecific(bg, []Specific{{Proto: TCP}}); return err }},
		{name: "ListenSpecific/unbound route without address", is: []error{ErrNoAddress},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenSpecific(bg, []Specific{{Route: Route{Family: IPv4}, Proto: TCP}})
				return err
			}},
		{name: "ListenSpecific/unbound route not on this host", as: []any{listenErr, bindErr}, errno: syscall.EADDRNOTAVAIL,
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenSpecific(bg, []Specific{{Route: notLocal, Proto: UDP}})
				return err
			}},
		{name: "ListenSpecific/IPv6 address on an IPv4 route", is: []error{ErrFamilyUnsupported},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenSpecific(bg, []Specific{{Route: hostileRoute(IPv4, "[::1]:0"), Proto: TCP}})
				return err
			}},
		{name: "ListenSpecific/IPv4-mapped address on an IPv6 route", is: []error{ErrFamilyUnsupported},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenSpecific(bg, []Specific{{Route: hostileRoute(IPv6, "[::ffff:127.0.0.1]:0"), Proto: UDP}})
				return err
			}},
		{name: "ListenSpecific/bad zone", is: []error{ErrNoInterface}, as: []any{listenErr, bindErr, ifErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.ListenSpecific(bg, []Specific{{Route: hostileRoute(IPv6, llBadZone), Proto: UDP}})
				return err
			}},
		{name: "ListenSpecific/valid then invalid", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				lo, _ := Route{Family: IPv4}.Bind("localhost", 0)
				_, err := e.d.ListenSpecific(bg, []Specific{{Route: lo, Proto: UDP}, {}})
				return err
			}},
		{name: "ListenSpecific/the same address twice", is: []error{ErrAddrInUse}, as: []any{listenErr, bindErr},
			call: func(e *hostileEnv) error {
				lo, _ := Route{Family: IPv4}.Bind("localhost", e.freePort)
				_, err := e.d.ListenSpecific(bg, []Specific{{Route: lo, Proto: TCP}, {Route: lo, Proto: TCP}})
				return err
			}},
		{name: "ListenSpecific/over MaxListeners", is: []error{ErrTooManyListeners}, as: []any{limitErr},
			call: func(e *hostileEnv) error {
				lo, _ := Route{Family: IPv4}.Bind("localhost", 0)
				_, err := e.d.ListenSpecific(bg, slices.Repeat([]Specific{{Route: lo, Proto: UDP}}, 15))
				return err
			}},

		// ---- Daemon.AddListener ----
		{name: "AddListener/proto 9", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.AddListener(bg, 9, e.lo4); return err }},
		{name: "AddListener/zero route", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error { _, err := e.d.AddListener(bg, TCP, Route{}); return err }},
		{name: "AddListener/IPv4 route holding an IPv6 NIC IP", is: []error{ErrFamilyUnsupported}, as: []any{addrErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.AddListener(bg, TCP, Route{Family: IPv4, NIC: []netip.Addr{netip.MustParseAddr("::1")}})
				return err
			}},
		{name: "AddListener/IPv4 address on an IPv6 route", is: []error{ErrFamilyUnsupported},
			call: func(e *hostileEnv) error {
				_, err := e.d.AddListener(bg, UDP, hostileRoute(IPv6, "127.0.0.1:0"))
				return err
			}},
		{name: "AddListener/address not on this host", as: []any{listenErr, bindErr}, errno: syscall.EADDRNOTAVAIL,
			call: func(e *hostileEnv) error {
				_, err := e.d.AddListener(bg, TCP, hostileRoute(IPv4, "198.51.100.7:0"))
				return err
			}},
		{name: "AddListener/bad zone", is: []error{ErrNoInterface}, as: []any{listenErr, bindErr, ifErr},
			call: func(e *hostileEnv) error {
				_, err := e.d.AddListener(bg, TCP, hostileRoute(IPv6, llBadZone))
				return err
			}},
		{name: "AddListener/invalid Framing in the daemon's template", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.badFrameD.AddListener(bg, TCP, e.lo4); return err }},

		// ---- a closed daemon ----
		{name: "closed/ListenAll", is: []error{ErrDaemonClosed},
			call: func(e *hostileEnv) error {
				_, err := e.closedD.ListenAll(bg, []Target{e.loIf}, p0, tcp, IPv4)
				return err
			}},
		{name: "closed/ListenSpecific", is: []error{ErrDaemonClosed},
			call: func(e *hostileEnv) error {
				_, err := e.closedD.ListenSpecific(bg, []Specific{{Route: e.lo4, Proto: TCP}})
				return err
			}},
		{name: "closed/AddListener", is: []error{ErrDaemonClosed},
			call: func(e *hostileEnv) error { _, err := e.closedD.AddListener(bg, UDP, e.lo4); return err }},
		{name: "closed/SetOnMsg", is: []error{ErrDaemonClosed},
			call: func(e *hostileEnv) error { return e.closedD.SetOnMsg(echoCB) }},

		// ---- Listen ----
		{name: "Listen/nil context", is: []error{ErrInvalid}, as: []any{bindErr},
			call: func(e *hostileEnv) error { _, err := Listen(nilCtx, TCP, e.lo4, nil); return err }},
		{name: "Listen/zero Route", is: []error{ErrNoAddress}, as: []any{bindErr},
			call: func(e *hostileEnv) error { _, err := Listen(bg, TCP, Route{}, nil); return err }},
		{name: "Listen/proto 9", is: []error{ErrInvalid}, as: []any{bindErr},
			call: func(e *hostileEnv) error { _, err := Listen(bg, 9, e.lo4, nil); return err }},
		{name: "Listen/invalid Framing", is: []error{ErrInvalid}, as: []any{bindErr},
			call: func(e *hostileEnv) error { _, err := Listen(bg, TCP, e.lo4, &PipeConfig{Framing: 4}); return err }},
		{name: "Listen/unbound route without address", is: []error{ErrNoAddress}, as: []any{bindErr},
			call: func(e *hostileEnv) error { _, err := Listen(bg, UDP, Route{Family: IPv6}, nil); return err }},
		{name: "Listen/BindError of an unbound route keeps its family", is: []error{ErrNoAddress}, as: []any{bindErr},
			call: func(e *hostileEnv) error { _, err := Listen(bg, UDP, Route{Family: IPv6}, nil); return err },
			check: func(t hzErrorfer, err error) {
				var be *BindError
				if errors.As(err, &be) && be.Family != IPv6 {
					t.Errorf("BindError.Family = %v, want IPv6 (the route's): %v", be.Family, err)
				}
			}},
		{name: "Listen/IPv4 address on an IPv6 route", is: []error{ErrFamilyUnsupported}, as: []any{bindErr},
			call: func(e *hostileEnv) error {
				_, err := Listen(bg, TCP, hostileRoute(IPv6, "127.0.0.1:0"), nil)
				return err
			}},
		{name: "Listen/bound route of family 9", is: []error{ErrBadFamily}, as: []any{bindErr},
			call: func(e *hostileEnv) error { _, err := Listen(bg, TCP, hostileRoute(9, "127.0.0.1:0"), nil); return err }},
		{name: "Listen/bad zone", is: []error{ErrNoInterface}, as: []any{bindErr, ifErr},
			call: func(e *hostileEnv) error { _, err := Listen(bg, UDP, hostileRoute(IPv6, llBadZone), nil); return err }},
		{name: "Listen/address not on this host", as: []any{bindErr}, errno: syscall.EADDRNOTAVAIL,
			call: func(e *hostileEnv) error {
				_, err := Listen(bg, TCP, hostileRoute(IPv4, "198.51.100.7:0"), nil)
				return err
			}},
		{name: "Listen/port in use", is: []error{ErrAddrInUse}, as: []any{bindErr}, errno: syscall.EADDRINUSE,
			call: func(e *hostileEnv) error {
				_, err := Listen(bg, TCP, hostileRoute(IPv4, fmt.Sprintf("127.0.0.1:%d", e.heldPort)), nil)
				return err
			}},
		{name: "ServeListener/nil", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := ServeListener(nil, nil); return err }},
		{name: "ServePacketConn/nil", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := ServePacketConn(nil, nil); return err }},
		{name: "ServeListener/invalid Framing", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				l, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					return fmt.Errorf("setup: %v", err)
				}
				defer l.Close()
				p, err := ServeListener(l, &PipeConfig{Framing: 200})
				if p != nil {
					p.Close()
				}
				return err
			}},

		{name: "Adopt/no files", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.Adopt(bg, nil); return err }},
		{name: "Adopt/nil File", is: []error{ErrInvalid}, as: []any{adoptErr},
			call: func(e *hostileEnv) error { _, err := e.d.Adopt(bg, []*os.File{nil}); return err }},
		{name: "Adopt/nil context", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.Adopt(nilCtx, []*os.File{nil}); return err }},
		{name: "Adopt/nil option", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.d.Adopt(bg, []*os.File{nil}, nil); return err }},

		// ---- Dial ----
		{name: "Dial/nil context", is: []error{ErrInvalid}, as: []any{dialErr},
			call: func(e *hostileEnv) error {
				_, err := Dial(nilCtx, TCP, Route{}, "127.0.0.1", e.tcpL.LocalAddr().Port(), nil)
				return err
			}},
		{name: "Dial/port 0", is: []error{ErrInvalid}, as: []any{dialErr},
			call: func(e *hostileEnv) error { _, err := Dial(bg, UDP, Route{}, "127.0.0.1", 0, nil); return err }},
		{name: "Dial/route of family 9", is: []error{ErrBadFamily}, as: []any{dialErr},
			call: func(e *hostileEnv) error { _, err := Dial(bg, TCP, Route{Family: 9}, "127.0.0.1", 9, nil); return err }},
		{name: "Dial/IPv4 address on an IPv6 route", is: []error{ErrFamilyUnsupported}, as: []any{dialErr},
			call: func(e *hostileEnv) error {
				_, err := Dial(bg, TCP, hostileRoute(IPv6, "127.0.0.1:0"), "::1", 9, nil)
				return err
			}},
		{name: "Dial/local address in use", is: []error{ErrAddrInUse}, as: []any{dialErr}, errno: syscall.EADDRINUSE,
			call: func(e *hostileEnv) error {
				_, err := Dial(bg, TCP, hostileRoute(IPv4, fmt.Sprintf("127.0.0.1:%d", e.tcpL.LocalAddr().Port())), "127.0.0.1", e.heldPort, nil)
				return err
			}},
		{name: "Dial/proto 9", is: []error{ErrInvalid}, as: []any{dialErr},
			call: func(e *hostileEnv) error { _, err := Dial(bg, 9, Route{}, "127.0.0.1", 9, nil); return err }},
		{name: "Dial/invalid Framing", is: []error{ErrInvalid}, as: []any{dialErr},
			call: func(e *hostileEnv) error {
				_, err := Dial(bg, TCP, Route{}, "127.0.0.1", 9, &PipeConfig{Framing: 9})
				return err
			}},
		{name: "Dial/IPv4 host on an IPv6 route", is: []error{ErrFamilyUnsupported}, as: []any{dialErr},
			call: func(e *hostileEnv) error {
				_, err := Dial(bg, UDP, Route{Family: IPv6}, "127.0.0.1", 9, nil)
				return err
			}},
		{name: "Dial/host with a bad zone", is: []error{ErrNoInterface}, as: []any{dialErr, ifErr},
			call: func(e *hostileEnv) error { _, err := Dial(bg, TCP, Route{}, "fe80::1%nosuchif0", 9, nil); return err }},
		{name: "Dial/local address with a bad zone", is: []error{ErrNoInterface}, as: []any{dialErr, ifErr},
			call: func(e *hostileEnv) error {
				_, err := Dial(bg, UDP, hostileRoute(IPv6, llBadZone), "fe80::2%nosuchif0", 9, nil)
				return err
			}},
		{name: "Dial/local address not on this host", as: []any{dialErr}, errno: syscall.EADDRNOTAVAIL,
			call: func(e *hostileEnv) error {
				_, err := Dial(bg, TCP, hostileRoute(IPv4, "198.51.100.7:0"), "127.0.0.1", e.tcpL.LocalAddr().Port(), nil)
				return err
			}},
		{name: "Dial/unroutable IPv4 (multicast)", as: []any{dialErr}, errno: syscall.ENETUNREACH,
			call: func(e *hostileEnv) error { _, err := Dial(bg, TCP, Route{}, "224.0.0.1", 9, nil); return err }},
		{name: "Dial/unroutable IPv6 (multicast)", as: []any{dialErr}, errno: syscall.ENETUNREACH,
			call: func(e *hostileEnv) error { _, err := Dial(bg, TCP, Route{Family: IPv6}, "ff02::1", 9, nil); return err }},
		{name: "Dial/cancelled context", is: []error{context.Canceled}, as: []any{dialErr},
			call: func(e *hostileEnv) error {
				ctx, cancel := context.WithCancel(bg)
				cancel()
				_, err := Dial(ctx, TCP, Route{}, "127.0.0.1", e.tcpL.LocalAddr().Port(), nil)
				return err
			}},

		// ---- Pipe methods ----
		{name: "Send/closed UDP server", is: []error{ErrPipeClosed},
			call: func(e *hostileEnv) error {
				return e.closedUDPSrv.Send([]byte("x"), Peer{AddrPort: e.udpCli.LocalAddr()})
			}},
		{name: "Send/closed TCP server", is: []error{ErrPipeClosed},
			call: func(e *hostileEnv) error {
				return e.closedTCPSrv.Send([]byte("x"), Peer{AddrPort: e.tcpCli.LocalAddr()})
			}},
		{name: "Send/closed TCP client", is: []error{ErrPipeClosed},
			call: func(e *hostileEnv) error { return e.closedTCPCli.Send([]byte("x"), Peer{}) }},
		{name: "Send/closed UDP client", is: []error{ErrPipeClosed},
			call: func(e *hostileEnv) error { return e.closedUDPCli.Send([]byte("x"), Peer{}) }},
		{name: "Send/UDP server without destination", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { return e.udpSrv.Send([]byte("x"), Peer{}) }},
		{name: "Send/UDP server to port 0", errno: syscall.EINVAL,
			call: func(e *hostileEnv) error {
				return e.udpSrv.Send([]byte("x"), Peer{AddrPort: netip.MustParseAddrPort("127.0.0.1:0")})
			}},
		{name: "Send/IPv4 UDP server to an IPv6 address", is: []error{ErrFamilyUnsupported},
			call: func(e *hostileEnv) error {
				return e.udpSrv.Send([]byte("x"), Peer{AddrPort: netip.MustParseAddrPort("[::1]:9")})
			}},
		{name: "Send/UDP server to a bad zone", is: []error{ErrNoInterface},
			call: func(e *hostileEnv) error {
				if e.nsUDP6 == nil {
					return errHzSkip
				}
				return e.nsUDP6.Send([]byte("x"), Peer{AddrPort: netip.MustParseAddrPort("[fe80::1%nosuchif0]:9")})
			}},
		{name: "Send/TCP server to an unknown client", is: []error{ErrNoClient},
			call: func(e *hostileEnv) error {
				return e.tcpSrv.Send([]byte("x"), Peer{AddrPort: netip.MustParseAddrPort("127.0.0.1:9")})
			}},
		{name: "Send/TCP server without destination", is: []error{ErrNoClient},
			call: func(e *hostileEnv) error { return e.tcpSrv.Send([]byte("x"), Peer{}) }},
		{name: "Send/TCP client to another address", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				return e.tcpCli.Send([]byte("x"), Peer{AddrPort: netip.MustParseAddrPort("127.0.0.1:9")})
			}},
		{name: "Send/UDP client to another address", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error {
				return e.udpCli.Send([]byte("x"), Peer{AddrPort: netip.MustParseAddrPort("127.0.0.1:9")})
			}},
		{name: "Send/frame over MaxMsgSize", is: []error{ErrFrameTooLarge},
			call: func(e *hostileEnv) error { return e.framedCli.Send(make([]byte, 100), Peer{}) }},
		{name: "Send/newline in a FrameLine message", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { return e.lineCli.Send([]byte("a\nb"), Peer{}) }},
		{name: "Accept/UDP server", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.udpSrv.Accept(bg); return err }},
		{name: "Accept/TCP client", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.tcpCli.Accept(bg); return err }},
		{name: "Accept/closed TCP server", is: []error{ErrPipeClosed},
			call: func(e *hostileEnv) error { _, err := e.closedTCPSrv.Accept(bg); return err }},
		{name: "Subscribe/bad pattern", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.udpSrv.Subscribe("(", netip.AddrPort{}); return err }},
		{name: "Subscribe/closed pipe", is: []error{ErrPipeClosed},
			call: func(e *hostileEnv) error { _, err := e.closedUDPSrv.Subscribe("", netip.AddrPort{}); return err }},
		{name: "Recv/nil subscription", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.udpSrv.Recv(bg, nil); return err }},
		{name: "Recv/subscription of another pipe", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.tcpSrv.Recv(bg, e.otherSub); return err }},
		{name: "Recv/closed pipe", is: []error{ErrPipeClosed},
			call: func(e *hostileEnv) error { _, err := e.closedTCPSrv.Recv(bg, e.closedSub); return err }},
		{name: "AddPipe/nil", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { return e.tcpCli.AddPipe(nil) }},
		{name: "AddPipe/itself", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { return e.tcpCli.AddPipe(e.tcpCli) }},
		{name: "AddPipe/a server", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { return e.tcpCli.AddPipe(e.udpSrv) }},
		{name: "AddPipe/closed pipe", is: []error{ErrPipeClosed},
			call: func(e *hostileEnv) error { return e.closedTCPCli.AddPipe(e.udpCli) }},

		// ---- ports ----
		{name: "PortRange.Validate/reversed", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error { return PortRange{10, 5}.Validate() }},
		{name: "Ports.MarshalText/invalid", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error { _, err := Ports{{5, 1}}.MarshalText(); return err }},
		{name: "Ports.UnmarshalText/garbage", is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error { var ps Ports; return ps.UnmarshalText([]byte("1-2-3")) }},

		// ---- interfaces, routes, families ----
		{name: "InterfaceByName/unknown", is: []error{ErrNoInterface}, as: []any{ifErr},
			call: func(e *hostileEnv) error { _, err := InterfaceByName("nosuchif0"); return err }},
		{name: "InterfaceByName/empty", is: []error{ErrInvalid}, as: []any{ifErr},
			call: func(e *hostileEnv) error { _, err := InterfaceByName(""); return err }},
		{name: "InterfaceByIndex/negative", is: []error{ErrInvalid}, as: []any{ifErr},
			call: func(e *hostileEnv) error { _, err := InterfaceByIndex(-1); return err }},
		{name: "InterfaceByIndex/unknown", is: []error{ErrNoInterface}, as: []any{ifErr},
			call: func(e *hostileEnv) error { _, err := InterfaceByIndex(1 << 30); return err }},
		{name: "DefaultInterface/family 9", is: []error{ErrBadFamily}, as: []any{ifErr},
			call: func(e *hostileEnv) error { _, err := DefaultInterface(9); return err }},
		{name: "Route.Bind/garbage host", is: []error{ErrInvalid},
			call: func(e *hostileEnv) error { _, err := e.lo4.Bind("not an address", 1); return err }},
		{name: "Route.Bind/family 9 wildcard", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error { _, err := Route{Family: 9}.Bind("*", 1); return err }},
		{name: "Route.BindIP/other family", is: []error{ErrFamilyUnsupported}, as: []any{addrErr},
			call: func(e *hostileEnv) error { _, err := e.lo4.BindIP(netip.MustParseAddr("::1"), 1); return err }},
		{name: "Route.BindIP/not on route", is: []error{ErrAddrNotOnRoute}, as: []any{addrErr},
			call: func(e *hostileEnv) error { _, err := e.lo4.BindIP(netip.MustParseAddr("127.0.0.2"), 1); return err }},
		{name: "RoutePool.First/empty", is: []error{ErrNoRoute},
			call: func(e *hostileEnv) error { _, err := RoutePool(nil).First(); return err }},
		{name: "Family.UnmarshalText/5", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error { var f Family; return f.UnmarshalText([]byte("5")) }},
		{name: "Family.MarshalText/9", is: []error{ErrBadFamily},
			call: func(e *hostileEnv) error { _, err := Family(9).MarshalText(); return err }},
	}
	// ParsePorts garbage: every entry is a *PortError wrapping ErrBadPort.
	for _, s := range []string{"", "   ", ",", "abc", "70000", "65536", "-1", "1-", "-", "10-5", "0-5", "5-0",
		"1,1", "1-5,3", "1,,2", "+5", "0x10", "5 5", "1-2-3", "١٢", "99999999999999999999", "0,0", "\x00", "1e3", "٣-٤"} {
		cases = append(cases, hostileCase{name: fmt.Sprintf("ParsePorts/%q", s), is: []error{ErrBadPort}, as: []any{portErr},
			call: func(e *hostileEnv) error {
				ps, err := ParsePorts(s)
				if err == nil {
					return fmt.Errorf("accepted as %v", ps)
				}
				return err
			}})
	}
	return cases
}

// errHzSkip is returned by a case that cannot run here.
var errHzSkip = errors.New("case needs root (network namespace)")

// hzChain lists the types of an error's chain, for failure messages.
func hzChain(err error) string {
	var parts []string
	var walk func(error, int)
	walk = func(err error, depth int) {
		if err == nil || depth > 10 {
			return
		}
		parts = append(parts, reflect.TypeOf(err).String())
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap(), depth+1)
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e, depth+1)
			}
		}
	}
	walk(err, 0)
	return strings.Join(parts, " > ")
}

// TestHostileArguments calls every public entry point with invalid
// arguments and checks that each returns the documented typed error,
// without a panic, and that a running daemon is left as it was: the same
// listeners, no socket more or less in the process, and both of its
// listeners (TCP and UDP) still echo.
func TestHostileArguments(t *testing.T) {
	e := setupHostile(t)
	wantListeners := e.d.Listeners()
	if len(wantListeners) != 2 {
		t.Fatalf("setup: %d listeners", len(wantListeners))
	}
	echo := func(t *testing.T, when string) {
		t.Helper()
		if err := hzEcho("tcp4", e.tcpL.LocalAddr(), "tcp "+when); err != nil {
			t.Fatalf("TCP listener %s: %v", when, err)
		}
		if err := hzEcho("udp4", e.udpL.LocalAddr(), "udp "+when); err != nil {
			t.Fatalf("UDP listener %s: %v", when, err)
		}
		hzWaitNoClients(t, e.tcpL)
	}
	echo(t, "before")
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			socks := hzSocketCount(t)
			var err error
			var panicked any
			func() {
				defer func() { panicked = recover() }()
				err = tc.call(e)
			}()
			if panicked != nil {
				t.Fatalf("BUG: panics: %v", panicked)
			}
			if err == errHzSkip {
				testnet.SkipUnlessCI(t, "%v", err)
			}
			checkHostileErr(t, tc, err)
			// The daemon is unchanged.
			if got := e.d.Listeners(); !slices.Equal(got, wantListeners) || e.d.Len() != 2 {
				t.Fatalf("listeners changed: %v (Len %d)", got, e.d.Len())
			}
			if after := hzSocketCount(t); after != socks {
				t.Fatalf("the call left %d sockets behind (before %d, after %d)", after-socks, socks, after)
			}
			echo(t, "after "+tc.name)
		})
	}
	echo(t, "at the end")
}

type hzErrorfer interface {
	Errorf(format string, args ...any)
}

func checkHostileErr(t *testing.T, tc hostileCase, err error) {
	if err == nil {
		t.Errorf("no error")
		return
	}
	// "p2pd: " once, at the start: no stutter.
	if msg := err.Error(); !strings.HasPrefix(msg, "p2pd: ") || strings.Count(msg, "p2pd:") != 1 {
		t.Errorf("error text %q: want one \"p2pd: \", at the start", msg)
	}
	for _, target := range tc.is {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(%q, %v) is false; chain: %s", err, target, hzChain(err))
		}
	}
	for _, target := range tc.as {
		if !errors.As(err, target) {
			t.Errorf("errors.As(%q, %T) is false; chain: %s", err, target, hzChain(err))
		}
	}
	if tc.errno != 0 && runtime.GOOS == "linux" && !errors.Is(err, tc.errno) {
		t.Errorf("errors.Is(%q, %v) is false; chain: %s", err, tc.errno, hzChain(err))
	}
	if tc.check != nil {
		tc.check(t, err)
	}
	if !strings.HasPrefix(err.Error(), "p2pd: ") && len(tc.is)+len(tc.as) > 0 && !errors.Is(err, context.Canceled) {
		t.Errorf("message %q does not start with \"p2pd: \"", err)
	}
}

// ---- TLS ----

// hzCA is a test certificate authority that signs server and client
// certificates.
type hzCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func hzNewCA(t *testing.T, name string) *hzCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &hzCA{cert: cert, key: key, pool: pool}
}

// issue signs a leaf certificate valid from notBefore to notAfter, for
// 127.0.0.1 and the DNS name "p2pd.test", for server or client use.
func (ca *hzCA) issue(t *testing.T, client bool, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "p2pd leaf"},
		NotBefore: notBefore, NotAfter: notAfter,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"p2pd.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// hzTLSServer is a TLS echo server pipe that counts its callbacks and
// records the end reasons of its connections.
type hzTLSServer struct {
	p     *Pipe
	calls atomic.Int32
	ups   atomic.Int32
	ends  chan error // reasons of the connections' OnEnd
}

func hzNewTLSServer(t *testing.T, cfg *tls.Config, connectTimeout time.Duration) *hzTLSServer {
	t.Helper()
	s := &hzTLSServer{ends: make(chan error, 16)}
	s.p = listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{
		TLS: cfg, Framing: FrameLine, ConnectTimeout: connectTimeout, Logger: quietLogger(),
		OnMsg: MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
			s.calls.Add(1)
			p.Send(msg, from)
		}),
		OnUp: func(*Pipe) { s.ups.Add(1) },
		OnEnd: func(p *Pipe, reason error) {
			if !p.IsServer() {
				s.ends <- reason
			}
		},
	})
	return s
}

// refused waits for the server side of a refused connection to end and
// checks that no callback ran.
func (s *hzTLSServer) refused(t *testing.T) error {
	t.Helper()
	select {
	case reason := <-s.ends:
		if n := s.calls.Load(); n != 0 {
			t.Errorf("MsgCB called %d times for a refused peer", n)
		}
		if n := s.ups.Load(); n != 0 {
			t.Errorf("OnUp called %d times for a refused peer", n)
		}
		if reason == nil {
			t.Errorf("refused connection ended with a nil reason")
		}
		return reason
	case <-time.After(waitFor):
		t.Fatal("the server did not end the connection")
	}
	return nil
}

// hzExpectClosed checks that the server closes c: a read gives EOF or a
// reset, and no byte of an echo.
func hzExpectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitFor))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the server did not close the connection")
	}
	if bytes.Contains(b, []byte("GET")) || bytes.Contains(b, []byte("hello")) {
		t.Fatalf("the server echoed plaintext: %q", b)
	}
}

// TestTLSRefusals: what TestTLS does not cover. A plaintext HTTP request
// gets the connection closed with no callback and no OnUp; a client that
// never speaks is cut off by ConnectTimeout; with client certificates
// required, clients without one, with an untrusted one or with an expired
// one are refused before any callback; a client refuses an expired server
// certificate and a certificate for another name (SNI / hostname).
func TestTLSRefusals(t *testing.T) {
	ca, rogue := hzNewCA(t, "p2pd CA"), hzNewCA(t, "rogue CA")
	now := time.Now()
	serverCert := ca.issue(t, false, now.Add(-time.Hour), now.Add(time.Hour))

	t.Run("plaintext HTTP request", func(t *testing.T) {
		s := hzNewTLSServer(t, &tls.Config{Certificates: []tls.Certificate{serverCert}}, 0)
		c, err := net.Dial("tcp", s.p.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.1\r\nHost: p2pd.test\r\n\r\nhello\n"))
		hzExpectClosed(t, c)
		reason := s.refused(t)
		var rh tls.RecordHeaderError
		if !errors.As(reason, &rh) {
			t.Errorf("reason %v, want a tls.RecordHeaderError", reason)
		}
	})

	t.Run("silent client cut by ConnectTimeout", func(t *testing.T) {
		s := hzNewTLSServer(t, &tls.Config{Certificates: []tls.Certificate{serverCert}}, 200*time.Millisecond)
		c, err := net.Dial("tcp", s.p.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		t0 := time.Now()
		hzExpectClosed(t, c)
		if el := time.Since(t0); el > 3*time.Second {
			t.Errorf("closed after %v, want about 200ms", el)
		}
		if reason := s.refused(t); !errors.Is(reason, context.DeadlineExceeded) {
			t.Errorf("reason %v, want DeadlineExceeded", reason)
		}
	})

	mtls := &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool}
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no client certificate", nil},
		{"untrusted client certificate", []tls.Certificate{rogue.issue(t, true, now.Add(-time.Hour), now.Add(time.Hour))}},
		{"expired client certificate", []tls.Certificate{ca.issue(t, true, now.Add(-48*time.Hour), now.Add(-24*time.Hour))}},
		{"client certificate not yet valid", []tls.Certificate{ca.issue(t, true, now.Add(24*time.Hour), now.Add(48*time.Hour))}},
	} {
		t.Run("mTLS/"+tc.name, func(t *testing.T) {
			s := hzNewTLSServer(t, mtls, 0)
			in := newInbox()
			cli, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", s.p.LocalAddr().Port(), &PipeConfig{
				OnMsg: in, Framing: FrameLine, Logger: quietLogger(),
				TLS: &tls.Config{RootCAs: ca.pool, Certificates: tc.certs},
			})
			if err == nil {
				defer cli.Close()
				// TLS 1.3: the client finishes its handshake before the
				// server has checked the certificate; the server's alert
				// ends the pipe.
				cli.Send([]byte("hello"), Peer{})
				waitDone(t, cli)
				if cli.Err() == nil {
					t.Errorf("client pipe ended without an error")
				}
			}
			s.refused(t)
			if len(in.ch) != 0 {
				t.Errorf("the refused client got a reply")
			}
		})
	}
	t.Run("mTLS/valid client certificate", func(t *testing.T) {
		s := hzNewTLSServer(t, mtls, 0)
		in := newInbox()
		cli, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", s.p.LocalAddr().Port(), &PipeConfig{
			OnMsg: in, Framing: FrameLine,
			TLS: &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{ca.issue(t, true, now.Add(-time.Hour), now.Add(time.Hour))}},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		cli.Send([]byte("hello"), Peer{})
		if m := in.next(t); string(m.Data) != "hello" {
			t.Fatalf("got %q", m.Data)
		}
	})

	t.Run("expired server certificate", func(t *testing.T) {
		s := hzNewTLSServer(t, &tls.Config{Certificates: []tls.Certificate{ca.issue(t, false, now.Add(-48*time.Hour), now.Add(-24*time.Hour))}}, 0)
		_, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", s.p.LocalAddr().Port(), &PipeConfig{TLS: &tls.Config{RootCAs: ca.pool}})
		var ci x509.CertificateInvalidError
		if !errors.As(err, &ci) || ci.Reason != x509.Expired {
			t.Fatalf("dial: %v, want an x509 Expired error", err)
		}
		s.refused(t)
	})

	t.Run("wrong server name", func(t *testing.T) {
		s := hzNewTLSServer(t, &tls.Config{Certificates: []tls.Certificate{serverCert}}, 0)
		_, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", s.p.LocalAddr().Port(), &PipeConfig{
			TLS: &tls.Config{RootCAs: ca.pool, ServerName: "other.test"},
		})
		var he x509.HostnameError
		if !errors.As(err, &he) {
			t.Fatalf("dial: %v, want an x509.HostnameError", err)
		}
		s.refused(t)
	})

	t.Run("unknown SNI refused by the server", func(t *testing.T) {
		s := hzNewTLSServer(t, &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if h.ServerName != "p2pd.test" {
				return nil, fmt.Errorf("no certificate for %q", h.ServerName)
			}
			return &serverCert, nil
		}}, 0)
		_, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", s.p.LocalAddr().Port(), &PipeConfig{
			TLS: &tls.Config{RootCAs: ca.pool, ServerName: "other.test"},
		})
		if err == nil {
			t.Fatal("dial with an unknown SNI succeeded")
		}
		if reason := s.refused(t); reason == nil || !strings.Contains(reason.Error(), "no certificate") {
			t.Errorf("server reason %v", reason)
		}
		// The right name works on the same server.
		in := newInbox()
		cli, err := Dial(context.Background(), TCP, Route{}, "127.0.0.1", s.p.LocalAddr().Port(), &PipeConfig{
			OnMsg: in, Framing: FrameLine, TLS: &tls.Config{RootCAs: ca.pool, ServerName: "p2pd.test"},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		cli.Send([]byte("sni ok"), Peer{})
		if m := in.next(t); string(m.Data) != "sni ok" {
			t.Fatalf("got %q", m.Data)
		}
	})
}
