package p2pd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/p2pd/p2pd/internal/testnet"
)

// How a fan-out listener binds: against a second instance, after a failed
// bind, in a Daemon.

func bindLoop(t *testing.T, port uint16) Route {
	t.Helper()
	r, err := Route{Family: IPv4}.Bind("localhost", port)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A second instance on the port of a fan-out listener is refused, with or
// without fan-out, and so is a fan-out one on the port of a plain
// listener. What the kernel still lets in is a socket of the same user
// that sets SO_REUSEPORT itself: it joins the group.
func TestFanoutSecondInstance(t *testing.T) {
	ctx := context.Background()
	for _, proto := range []Proto{TCP, UDP} {
		a := listen(t, proto, loopRoute(t, IPv4), &PipeConfig{Sockets: 4})
		r := bindLoop(t, a.LocalAddr().Port())
		for _, n := range []int{0, 4} {
			if _, err := Listen(ctx, proto, r, &PipeConfig{Sockets: n}); !errors.Is(err, ErrAddrInUse) {
				t.Errorf("%v: second listener (Sockets %d): %v, want ErrAddrInUse", proto, n, err)
			}
			d := &Daemon{PipeConfig: PipeConfig{Sockets: n}}
			if _, err := d.ListenSpecific(ctx, []Specific{{Route: r, Proto: proto}}); !errors.Is(err, ErrAddrInUse) || d.Len() != 0 {
				t.Errorf("%v: second daemon (Sockets %d): %v, want ErrAddrInUse", proto, n, err)
			}
			d.Close()
		}
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error { return setReusePort(rc) }}
		var c io.Closer
		var err error
		if proto == TCP {
			c, err = lc.Listen(ctx, "tcp4", r.Bound.String())
		} else {
			c, err = lc.ListenPacket(ctx, "udp4", r.Bound.String())
		}
		if err != nil {
			t.Errorf("%v: a socket of the same user with SO_REUSEPORT: %v; the kernel used to let it join", proto, err)
		} else {
			c.Close()
		}

		plain := listen(t, proto, loopRoute(t, IPv4), nil)
		if _, err := Listen(ctx, proto, bindLoop(t, plain.LocalAddr().Port()), &PipeConfig{Sockets: 4}); !errors.Is(err, ErrAddrInUse) {
			t.Errorf("%v: fan-out on the port of a plain listener: %v, want ErrAddrInUse", proto, err)
		}
	}
}

const fanChildEnv = "P2PD_FANOUT_TEST_CHILD"

// A socket of another user with SO_REUSEPORT is refused: the kernel lets
// only sockets of the group's user join it. The other user is a child
// process running as nobody.
func TestFanoutOtherUser(t *testing.T) {
	if spec := os.Getenv(fanChildEnv); spec != "" {
		fanChild(spec)
		return
	}
	if os.Geteuid() != 0 {
		testnet.SkipUnlessCI(t, "needs root, to run a child as nobody")
	}
	dir, err := os.MkdirTemp("", "p2pd-fanout")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := dir + "/p2pd.test"
	if err := fanCopy(bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []Proto{TCP, UDP} {
		a := listen(t, proto, loopRoute(t, IPv4), &PipeConfig{Sockets: 2})
		ctx, cancel := context.WithTimeout(context.Background(), 4*waitFor)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-test.run=^TestFanoutOtherUser$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %v", fanChildEnv, proto.network(IPv4), a.LocalAddr()))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: child: %v: %s", proto, err, out)
		}
		if !strings.Contains(string(out), "REFUSED address already in use") {
			t.Errorf("%v: another user's socket with SO_REUSEPORT: %s", proto, out)
		}
	}
}

// fanChild binds "network addr" with SO_REUSEPORT and says what happened.
func fanChild(spec string) {
	network, addr, _ := strings.Cut(spec, " ")
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error { return setReusePort(rc) }}
	var c io.Closer
	var err error
	if network == "tcp4" {
		c, err = lc.Listen(context.Background(), network, addr)
	} else {
		c, err = lc.ListenPacket(context.Background(), network, addr)
	}
	if err != nil {
		fmt.Println("REFUSED", sysError(err))
		return
	}
	c.Close()
	fmt.Println("JOINED")
}

func fanCopy(to string) error {
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// A bind that fails at the third socket closes the two bound before it and
// leaves the daemon as it was: the port is free, and the same call
// succeeds afterwards.
func TestFanoutBindFails(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	for _, proto := range []Proto{TCP, UDP} {
		r := bindLoop(t, hostileFreePort(t))
		// The first bind, sockets 0 and 1, then socket 2 fails (and so
		// does the plain TCP socket that net tries when MPTCP fails).
		calls, failAt := 0, 4
		ctl := func(string, string, syscall.RawConn) error {
			if calls++; failAt > 0 && calls >= failAt {
				return boom
			}
			return nil
		}
		d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Sockets: 4, ListenConfig: &net.ListenConfig{Control: ctl}}}
		defer d.Close()
		_, err := d.ListenSpecific(ctx, []Specific{{Route: r, Proto: proto}})
		var be *BindError
		if !errors.Is(err, boom) || !errors.As(err, &be) || be.Addr != r.Bound || d.Len() != 0 || calls < failAt {
			t.Fatalf("%v: %v (%d binds), want the third socket's error", proto, err, calls)
		}
		p := listen(t, proto, r, nil) // sockets 0 and 1 are closed

		p.Close()
		waitDone(t, p)
		failAt = -1
		ps, err := d.ListenSpecific(ctx, []Specific{{Route: r, Proto: proto}})
		if err != nil || len(ps) != 1 || d.Len() != 1 || len(ps[0].fan.socks) != 4 {
			t.Fatalf("%v: the same call again: %v, %d listeners", proto, err, d.Len())
		}
	}
}

// A Daemon's fan-out listener is one listener: one entry, one set of
// counters, one Close.
func TestFanoutDaemon(t *testing.T) {
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, Sockets: 2}}
	defer d.Close()
	port := hostileFreePort(t)
	ps, err := d.ListenAll(context.Background(), []Target{Route{Family: IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}}, Ports{Port(port)}, []Proto{TCP, UDP}, IPv4)
	if err != nil || len(ps) != 2 || d.Len() != 2 || len(d.Listeners()) != 2 {
		t.Fatalf("%d listeners, %v", d.Len(), err)
	}
	for _, p := range ps {
		if p.fan == nil || len(p.fan.socks) != 2 || p.LocalAddr().Port() != port {
			t.Fatalf("%v: %+v", p.LocalAddr(), p.fan)
		}
		if err := hzEcho(p.Proto().network(IPv4), p.LocalAddr(), "hi"); err != nil {
			t.Fatal(err)
		}
	}
	if st := d.Stats(); st.Listeners != 2 || st.Accepted != 1 {
		t.Fatalf("%+v", st)
	}
	d.Close()
	for _, p := range ps {
		waitDone(t, p)
	}
}

// The counters of a fan-out listener count every socket's drops.
func TestFanoutStatsCountEverySocket(t *testing.T) {
	release := make(chan struct{})
	small := func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1) })
	}
	srv := listen(t, UDP, loopRoute(t, IPv4), &PipeConfig{Sockets: 4, ListenConfig: &net.ListenConfig{Control: small},
		OnMsg: MsgCallbackFunc(func([]byte, Peer, *Pipe) { <-release })})
	defer close(release)
	msg := make([]byte, 512)
	for range 16 {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(srv.LocalAddr()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range 32 {
			c.Write(msg)
		}
	}
	var sum, others uint64
	for i := range srv.fan.socks {
		n := recvDropped(srv.fan.socks[i].udp)
		sum += n
		if i > 0 {
			others += n
		}
	}
	if st := srv.Stats(); st.RecvDropped != sum || others == 0 {
		t.Fatalf("RecvDropped %d, sockets' drops %d (%d on the other sockets than the first)", st.RecvDropped, sum, others)
	}
}
