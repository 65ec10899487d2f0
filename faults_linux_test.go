//go:build linux

package p2pd

// Faults of the environment, on Linux: interfaces without the addresses a
// call asks for (nothing else, and never the wildcard, gets bound), and a
// process out of file descriptors (the accept loop backs off instead of
// spinning, and serves the queued clients once descriptors are free).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// fltSocket is one socket of `ss -Htanu` run inside a namespace.
type fltSocket struct {
	proto string // "tcp" or "udp"
	state string // "LISTEN", "UNCONN", "TIME-WAIT", ...
	local netip.AddrPort
	wild  bool // bound to 0.0.0.0, :: or * (dual-stack wildcard)
}

func (s fltSocket) String() string { return s.proto + " " + s.local.String() }

// fltSockets lists every TCP and UDP socket of h, in any state.
func fltSockets(t *testing.T, h *testnet.Host) []fltSocket {
	t.Helper()
	out, err := h.Command("ss", "-Htanu").Output()
	if err != nil {
		t.Fatalf("ss -Htanu: %v", err)
	}
	var list []fltSocket
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		s := fltSocket{proto: f[0], state: f[1]}
		local := f[4]
		i := strings.LastIndex(local, ":")
		host, port := local[:i], local[i+1:]
		pn, err := strconv.Atoi(port)
		if err != nil {
			t.Fatalf("ss line %q: %v", line, err)
		}
		zone := ""
		if j := strings.LastIndex(host, "%"); j >= 0 {
			host, zone = host[:j], host[j+1:]
		}
		host = strings.Trim(host, "[]")
		if host == "*" {
			s.wild = true
			host = "::"
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			t.Fatalf("ss line %q: %v", line, err)
		}
		s.wild = s.wild || a.IsUnspecified()
		s.local = netip.AddrPortFrom(a.WithZone(zone), uint16(pn))
		list = append(list, s)
	}
	return list
}

// fltBound returns the bound (listening TCP, any UDP) sockets of h on
// ports lo..hi as sorted strings, and fails on any wildcard among them.
func fltBound(t *testing.T, h *testnet.Host, lo, hi uint16) []string {
	t.Helper()
	var out []string
	for _, s := range fltSockets(t, h) {
		if s.local.Port() < lo || s.local.Port() > hi {
			continue
		}
		if s.wild {
			t.Errorf("wildcard bound: %v (%s)", s, s.state)
		}
		if s.proto == "udp" || s.state == "LISTEN" {
			out = append(out, s.String())
		}
	}
	slices.Sort(out)
	return out
}

func fltPipeStrings(ps []*Pipe) []string {
	var out []string
	for _, p := range ps {
		out = append(out, strings.ToLower(p.Proto().String())+" "+p.LocalAddr().String())
	}
	slices.Sort(out)
	return out
}

// TestListenAllBindsNothingUnasked: in a namespace, ListenAll calls whose
// targets lack the requested addresses fail with a typed error and bind
// nothing (and never the wildcard, checked with ss); with BestEffort they
// bind exactly the addresses that exist; a Route target with a fixed port
// binds exactly the route's addresses, even when the route was bound to
// the wildcard.
func TestListenAllBindsNothingUnasked(t *testing.T) {
	n := testnet.New(t)
	srv := n.AddHost("srv")
	srv.AddDummy(testnet.IfConfig{Name: "d1", Addrs: []string{"10.9.0.1/24", "10.9.0.2/24", "2001:db8:9::1/64"}, NoDAD: true})
	srv.AddDummy(testnet.IfConfig{Name: "v4only", Addrs: []string{"10.8.0.1/24"}, NoIPv6: true})
	srv.AddDummy(testnet.IfConfig{Name: "gone", Addrs: []string{"10.10.0.1/24", "2001:db8:10::1/64"}, NoDAD: true})
	srv.AddDummy(testnet.IfConfig{Name: "half", Addrs: []string{"10.11.0.1/24", "2001:db8:11::1/64"}, NoDAD: true})
	ifc := map[string]*Interface{}
	srv.Do(t, func() {
		for _, name := range []string{"d1", "v4only", "gone", "half"} {
			i, err := InterfaceByName(name)
			if err != nil {
				t.Fatal(err)
			}
			ifc[name] = i
		}
	})
	protos := []Proto{TCP, UDP}
	ctx := context.Background()
	listenAll := func(d *Daemon, targets []Target, ports Ports, af Family) (ps []*Pipe, err error) {
		srv.Do(t, func() { ps, err = d.ListenAll(ctx, targets, ports, protos, af) })
		return ps, err
	}
	newDaemon := func(t *testing.T, d *Daemon) *Daemon {
		d.Logger = quietLogger()
		d.OnMsg = echoCB
		t.Cleanup(func() { d.Close() })
		return d
	}

	t.Run("no address of the family", func(t *testing.T) {
		for _, d := range []*Daemon{{}, {ErrorOnAF: true}, {BestEffort: true}} {
			d = newDaemon(t, d)
			ps, err := listenAll(d, []Target{ifc["v4only"]}, Ports{{27000, 27001}}, IPv6)
			if !errors.Is(err, ErrFamilyUnsupported) || ps != nil {
				t.Errorf("ErrorOnAF %v, BestEffort %v: %v, %v; want ErrFamilyUnsupported", d.ErrorOnAF, d.BestEffort, ps, err)
			}
			if d.Len() != 0 {
				t.Errorf("Len %d", d.Len())
			}
		}
		if got := fltBound(t, srv, 27000, 27001); len(got) != 0 {
			t.Fatalf("bound %v", got)
		}
	})

	t.Run("addresses removed after the Interface was read", func(t *testing.T) {
		gone := ifc["gone"]
		ll := srv.LinkLocal(t, "gone")
		if len(gone.Routes4) != 1 || len(gone.Routes6) != 1 || !slices.Contains(gone.LinkLocals(), ll) {
			t.Fatalf("gone before removal: %v", gone)
		}
		for _, cidr := range []string{"10.10.0.1/24", "2001:db8:10::1/64", ll.WithZone("").String() + "/64"} {
			srv.DelAddr(t, "gone", cidr)
		}
		if a := srv.Interface(t, "gone").Addrs; len(a) != 0 {
			t.Fatalf("gone still has %v", a)
		}
		for _, d := range []*Daemon{{}, {BestEffort: true}} {
			d = newDaemon(t, d)
			ps, err := listenAll(d, []Target{gone}, Ports{{27100, 27101}}, AnyFamily)
			var le *ListenError
			if !errors.As(err, &le) || ps != nil {
				t.Fatalf("BestEffort %v: %v, %v; want a *ListenError", d.BestEffort, ps, err)
			}
			// 3 addresses (IPv4, IPv6 global, link-local) x 2 ports x 2 protos.
			if le.Tried != 12 || len(le.Failed) != 12 || !le.Closed {
				t.Errorf("ListenError: tried %d, failed %d, closed %v", le.Tried, len(le.Failed), le.Closed)
			}
			for _, be := range le.Failed {
				if !errors.Is(be, syscall.EADDRNOTAVAIL) || be.Addr.Addr().IsUnspecified() {
					t.Errorf("failed bind %v: want EADDRNOTAVAIL on the removed address", be)
				}
			}
			if d.Len() != 0 {
				t.Errorf("Len %d", d.Len())
			}
		}
		if got := fltBound(t, srv, 27100, 27101); len(got) != 0 {
			t.Fatalf("bound %v", got)
		}
		// Read again, the interface serves nothing.
		var fresh *Interface
		srv.Do(t, func() {
			var err error
			if fresh, err = InterfaceByName("gone"); err != nil {
				t.Fatal(err)
			}
		})
		d := newDaemon(t, &Daemon{BestEffort: true})
		if ps, err := listenAll(d, []Target{fresh}, Ports{{27100, 27101}}, AnyFamily); !errors.Is(err, ErrFamilyUnsupported) || ps != nil {
			t.Fatalf("fresh interface without addresses: %v, %v", ps, err)
		}
		if got := fltBound(t, srv, 27100, 27101); len(got) != 0 {
			t.Fatalf("bound %v", got)
		}
	})

	t.Run("one address removed, best effort", func(t *testing.T) {
		half := ifc["half"]
		ll := srv.LinkLocal(t, "half")
		srv.DelAddr(t, "half", "2001:db8:11::1/64")
		d := newDaemon(t, &Daemon{BestEffort: true})
		ps, err := listenAll(d, []Target{half}, Ports{Port(27200)}, AnyFamily)
		var le *ListenError
		if !errors.As(err, &le) || le.Closed || len(le.Failed) != 2 || !errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Fatalf("%v; want a *ListenError with the 2 binds of 2001:db8:11::1", err)
		}
		for _, be := range le.Failed {
			if be.Addr.Addr() != netip.MustParseAddr("2001:db8:11::1") {
				t.Errorf("failed bind %v", be)
			}
		}
		var want []string
		for _, proto := range []string{"tcp", "udp"} {
			want = append(want, proto+" 10.11.0.1:27200", proto+" "+netip.AddrPortFrom(ll, 27200).String())
		}
		slices.Sort(want)
		if got := fltPipeStrings(ps); !slices.Equal(got, want) {
			t.Fatalf("pipes %v, want %v", got, want)
		}
		if got := fltBound(t, srv, 27200, 27200); !slices.Equal(got, want) {
			t.Fatalf("ss: %v, want %v", got, want)
		}
	})

	t.Run("route target with a fixed port", func(t *testing.T) {
		d1 := ifc["d1"]
		r4, r6 := d1.Routes4[0], d1.Routes6[0]
		if len(r4.NIC) != 2 {
			t.Fatalf("IPv4 route %v: want both private addresses in one route", r4)
		}
		ll := srv.LinkLocal(t, "d1")
		// A route bound to the wildcard is a template: ListenAll ignores
		// its Bound address.
		star, err := r4.Bind("*", 27300)
		if err != nil {
			t.Fatal(err)
		}
		d := newDaemon(t, &Daemon{})
		ps, err := listenAll(d, []Target{star, r6}, Ports{Port(27300)}, AnyFamily)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, proto := range []string{"tcp", "udp"} {
			want = append(want, proto+" 10.9.0.1:27300", proto+" [2001:db8:9::1]:27300", proto+" "+netip.AddrPortFrom(ll, 27300).String())
		}
		slices.Sort(want)
		if got := fltPipeStrings(ps); !slices.Equal(got, want) {
			t.Fatalf("pipes %v, want %v", got, want)
		}
		if got := fltBound(t, srv, 27300, 27300); !slices.Equal(got, want) {
			t.Fatalf("ss: %v, want %v", got, want)
		}
		// Served where bound, not on the route's other address.
		srv.Do(t, func() {
			if err := hzEcho("tcp4", netip.MustParseAddrPort("10.9.0.1:27300"), "bound"); err != nil {
				t.Errorf("echo on 10.9.0.1: %v", err)
			}
			if c, err := net.DialTimeout("tcp4", "10.9.0.2:27300", time.Second); err == nil {
				c.Close()
				t.Error("10.9.0.2:27300 accepts connections: something else is bound")
			}
		})
	})
}

// ---- descriptors exhausted ----

const fdxChildEnv = "P2PD_FDX_CHILD"

// TestFDExhaustion runs TestFDExhaustionChild in a child process (it lowers
// RLIMIT_NOFILE, which would disturb the other tests) and reports its
// figures.
func TestFDExhaustion(t *testing.T) {
	if os.Getenv(fdxChildEnv) == "1" {
		t.Skip("this is the child")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFDExhaustionChild$", "-test.count=1", "-test.v", "-test.timeout=50s")
	cmd.Env = append(os.Environ(), fdxChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	for line := range strings.Lines(string(out)) {
		if i := strings.Index(line, "FDX "); i >= 0 {
			t.Log(strings.TrimSpace(line[i:]))
		}
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFDExhaustionChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestFDExhaustionChild: with every descriptor in use, a TCP server pipe
// cannot accept; clients that connect meanwhile wait in the kernel's
// backlog. The accept loop must back off (little CPU time) rather than
// spin on EMFILE, and serve those clients once descriptors are free.
func TestFDExhaustionChild(t *testing.T) {
	if os.Getenv(fdxChildEnv) != "1" {
		return // the entry point of TestFDExhaustion's child process
	}
	var retries atomic.Int32
	logger := slog.New(&fltMsgCounter{Handler: slog.NewTextHandler(io.Discard, nil), substr: "accept error", n: &retries})
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, Logger: logger})
	sa := &syscall.SockaddrInet4{Port: int(srv.LocalAddr().Port()), Addr: [4]byte{127, 0, 0, 1}}

	// Client sockets are made before the descriptors run out, connected after.
	const clients = 8
	var cfds []int
	t.Cleanup(func() {
		for _, fd := range cfds {
			syscall.Close(fd)
		}
	})
	for range clients {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		cfds = append(cfds, fd)
		tv := syscall.Timeval{Sec: 5}
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
	}

	// Lower the limit and fill every descriptor left.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: uint64(len(ents) + 64), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var fillers []int
	freed := false
	free := func() {
		if freed {
			return
		}
		freed = true
		for _, fd := range fillers {
			syscall.Close(fd)
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	}
	t.Cleanup(free)
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("filling descriptors: %v", err)
			}
			break
		}
		fillers = append(fillers, fd)
		if len(fillers) > 1<<16 {
			t.Fatal("cannot exhaust descriptors")
		}
	}

	// The clients connect (the kernel completes the handshake into the
	// backlog) and send their request.
	for i, fd := range cfds {
		if err := syscall.Connect(fd, sa); err != nil {
			t.Fatalf("client %d connect: %v", i, err)
		}
		if _, err := syscall.Write(fd, []byte(fmt.Sprintf("ping-%d", i))); err != nil {
			t.Fatalf("client %d write: %v", i, err)
		}
	}

	// While exhausted: no spinning. CPU time of the whole process over 1 s.
	time.Sleep(50 * time.Millisecond)
	r0, w0 := fltCPUTime(t), time.Now()
	time.Sleep(time.Second)
	cpu, wall := fltCPUTime(t)-r0, time.Since(w0)
	exhaustedRetries := retries.Load()
	if n := len(srv.Clients()); n != 0 {
		t.Fatalf("%d connections accepted with no descriptor free", n)
	}
	buf := make([]byte, 64)
	for i, fd := range cfds {
		if n, _, err := syscall.Recvfrom(fd, buf, syscall.MSG_DONTWAIT); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("client %d got %q, %v before descriptors were freed", i, buf[:max(n, 0)], err)
		}
	}

	// Free the descriptors: every queued client is served.
	free()
	t0 := time.Now()
	var slowest time.Duration
	for i, fd := range cfds {
		want := fmt.Sprintf("ping-%d", i)
		n, err := syscall.Read(fd, buf)
		if err != nil || string(buf[:max(n, 0)]) != want {
			t.Fatalf("client %d after the descriptors were freed: %q, %v (after %v)", i, buf[:max(n, 0)], err, time.Since(t0))
		}
		slowest = time.Since(t0)
	}
	t.Logf("FDX fillers=%d limit=%d clients=%d cpu_while_exhausted=%v over wall=%v accept_retries=%d all_served_after=%v",
		len(fillers), lim.Cur, clients, cpu, wall, exhaustedRetries, slowest)
	if cpu > 300*time.Millisecond {
		t.Fatalf("the process used %v of CPU in %v with descriptors exhausted: the accept loop spins", cpu, wall)
	}
	if exhaustedRetries == 0 {
		t.Fatal("no accept error was logged: the descriptors were not exhausted for the listener")
	}
	if slowest > 3*time.Second {
		t.Fatalf("queued clients served %v after the descriptors were freed (backoff is capped at 1 s)", slowest)
	}
}

// fltCPUTime returns the user + system CPU time of the process.
func fltCPUTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fltMsgCounter counts log records whose message contains substr.
type fltMsgCounter struct {
	slog.Handler
	substr string
	n      *atomic.Int32
}

func (h *fltMsgCounter) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}
