//go:build unix

package p2pd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestActivationParseEnv(t *testing.T) {
	const pid = 4242
	cases := []struct {
		name      string
		env       map[string]string
		n         int
		names     []string
		is        []error // errors.Is must hold for each
		notIs     []error
		envVar    string // the *ActivationEnvError's Var, if any
		wantNoErr bool
	}{
		{name: "unset", env: nil, is: []error{ErrNoActivation}, notIs: []error{ErrActivationEnv, ErrActivationPID}},
		{name: "names only", env: map[string]string{"LISTEN_FDNAMES": "a"}, is: []error{ErrNoActivation}},
		{name: "one, no names", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1"},
			n: 1, names: []string{"unknown"}, wantNoErr: true},
		{name: "three named", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "web:dns:"},
			n: 3, names: []string{"web", "dns", ""}, wantNoErr: true},
		{name: "fds=0", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "0"},
			is: []error{ErrNoActivation}, notIs: []error{ErrActivationEnv}, envVar: "LISTEN_FDS"},
		{name: "wrong pid", env: map[string]string{"LISTEN_PID": "4243", "LISTEN_FDS": "2"},
			is: []error{ErrNoActivation, ErrActivationPID}, notIs: []error{ErrActivationEnv}, envVar: "LISTEN_PID"},
		{name: "pid missing", env: map[string]string{"LISTEN_FDS": "2"},
			is: []error{ErrNoActivation}, notIs: []error{ErrActivationPID, ErrActivationEnv}, envVar: "LISTEN_PID"},
		{name: "fds missing", env: map[string]string{"LISTEN_PID": "4242"},
			is: []error{ErrNoActivation}, notIs: []error{ErrActivationEnv}, envVar: "LISTEN_FDS"},
		{name: "pid garbage", env: map[string]string{"LISTEN_PID": "42x", "LISTEN_FDS": "1"},
			is: []error{ErrActivationEnv}, notIs: []error{ErrNoActivation}, envVar: "LISTEN_PID"},
		{name: "pid negative", env: map[string]string{"LISTEN_PID": "-4242", "LISTEN_FDS": "1"},
			is: []error{ErrActivationEnv}, envVar: "LISTEN_PID"},
		{name: "fds garbage", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "two"},
			is: []error{ErrActivationEnv}, notIs: []error{ErrNoActivation}, envVar: "LISTEN_FDS"},
		{name: "fds negative", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "-1"},
			is: []error{ErrActivationEnv}, envVar: "LISTEN_FDS"},
		{name: "fds huge", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "99999999999999999999"},
			is: []error{ErrActivationEnv}, envVar: "LISTEN_FDS"},
		{name: "fds too many", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": strconv.Itoa(maxListenFDs + 1)},
			is: []error{ErrActivationEnv}, envVar: "LISTEN_FDS"},
		{name: "fewer names", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b"},
			is: []error{ErrActivationEnv}, notIs: []error{ErrNoActivation}, envVar: "LISTEN_FDNAMES"},
		{name: "more names", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
			is: []error{ErrActivationEnv}, envVar: "LISTEN_FDNAMES"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, names, err := parseListenEnv(func(k string) string { return c.env[k] }, pid)
			if c.wantNoErr {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if n != c.n || strings.Join(names, "|") != strings.Join(c.names, "|") || len(names) != len(c.names) {
					t.Fatalf("got %d %q, want %d %q", n, names, c.n, c.names)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; got %d %q", n, names)
			}
			if n != 0 || names != nil {
				t.Errorf("an error returned %d %q too", n, names)
			}
			for _, e := range c.is {
				if !errors.Is(err, e) {
					t.Errorf("%v: not errors.Is %v", err, e)
				}
			}
			for _, e := range c.notIs {
				if errors.Is(err, e) {
					t.Errorf("%v: errors.Is %v", err, e)
				}
			}
			var ee *ActivationEnvError
			if c.envVar != "" && (!errors.As(err, &ee) || ee.Var != c.envVar) {
				t.Errorf("%v: want an *ActivationEnvError for %s", err, c.envVar)
			}
			if !strings.HasPrefix(err.Error(), "p2pd: ") || strings.Count(err.Error(), "p2pd: ") != 1 {
				t.Errorf("message %q", err)
			}
		})
	}
}

// TestActivationNotActivated: without the variables, ActivationFiles and
// ListenActivated say ErrNoActivation and touch nothing.
func TestActivationNotActivated(t *testing.T) {
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		t.Setenv(v, "")
	}
	socks, err := ActivationFiles(true)
	if !errors.Is(err, ErrNoActivation) || socks != nil {
		t.Fatalf("ActivationFiles = %v, %v", socks, err)
	}
	d := &Daemon{}
	defer d.Close()
	ps, err := d.ListenActivated(context.Background())
	if !errors.Is(err, ErrNoActivation) || ps != nil || d.Len() != 0 {
		t.Fatalf("ListenActivated = %v, %v", ps, err)
	}
	// Another process's environment: nothing claimed, the variables unset.
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
	t.Setenv("LISTEN_FDS", "1")
	if _, err := ActivationFiles(true); !errors.Is(err, ErrActivationPID) {
		t.Fatalf("wrong pid: %v", err)
	}
	if v, ok := os.LookupEnv("LISTEN_FDS"); ok {
		t.Fatalf("LISTEN_FDS=%q still set", v)
	}
	d.Close()
	if _, err := d.Adopt(context.Background(), nil); !errors.Is(err, ErrNoActivation) {
		t.Fatalf("Adopt(nil) = %v", err)
	}
}

// actSockets opens the sockets a service manager would pass: TCP and UDP
// on 127.0.0.1 and, when the host has IPv6 loopback, on ::1. The names are
// "tcp4", "udp4", "tcp6", "udp6".
func actSockets(t *testing.T) (names []string, addrs []netip.AddrPort, files []*os.File) {
	t.Helper()
	for _, c := range []struct{ name, network, addr string }{
		{"tcp4", "tcp4", "127.0.0.1:0"}, {"udp4", "udp4", "127.0.0.1:0"},
		{"tcp6", "tcp6", "[::1]:0"}, {"udp6", "udp6", "[::1]:0"},
	} {
		var f *os.File
		var a net.Addr
		var err error
		if strings.HasPrefix(c.network, "tcp") {
			var l net.Listener
			if l, err = net.Listen(c.network, c.addr); err == nil {
				a = l.Addr()
				f, err = l.(*net.TCPListener).File()
				l.Close()
			}
		} else {
			var pc net.PacketConn
			if pc, err = net.ListenPacket(c.network, c.addr); err == nil {
				a = pc.LocalAddr()
				f, err = pc.(*net.UDPConn).File()
				pc.Close()
			}
		}
		if err != nil {
			if strings.HasSuffix(c.name, "6") {
				t.Logf("no IPv6 loopback (%v): IPv4 only", err)
				continue
			}
			skipUnlessCI(t, "loopback: %v", err)
		}
		t.Cleanup(func() { f.Close() })
		names = append(names, c.name)
		addrs = append(addrs, addrPortOf(a))
		files = append(files, f)
	}
	return names, addrs, files
}

// actCheckEcho sends a message to every address and waits for it back.
func actCheckEcho(t *testing.T, names []string, addrs []netip.AddrPort) {
	t.Helper()
	for i, a := range addrs {
		msg := []byte("hello " + names[i])
		network := names[i][:3]
		c, err := net.DialTimeout(network, a.String(), 5*time.Second)
		if err != nil {
			t.Fatalf("%s %v: %v", names[i], a, err)
		}
		got := make([]byte, 64)
		var n int
		for try := 0; try < 5; try++ {
			if _, err = c.Write(msg); err != nil {
				break
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err = c.Read(got); err == nil || network == "tcp" {
				break
			}
		}
		c.Close()
		if err != nil || !bytes.Equal(got[:n], msg) {
			t.Fatalf("%s %v: echo %q, %v; want %q", names[i], a, got[:n], err, msg)
		}
	}
}

// TestActivationAdopt adopts sockets in the same process: they are served
// with the daemon's callback and found by Lookup, Listeners and Stats.
func TestActivationAdopt(t *testing.T) {
	names, addrs, files := actSockets(t)
	socks := make([]ActivatedSocket, len(files))
	for i, f := range files {
		socks[i] = ActivatedSocket{Name: names[i], FD: int(f.Fd()), File: f}
	}
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	ps, err := d.Adopt(context.Background(), socks)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != len(socks) || d.Len() != len(socks) || len(d.Listeners()) != len(socks) || d.Stats().Listeners != len(socks) {
		t.Fatalf("%d pipes, Len %d, Stats %+v; want %d", len(ps), d.Len(), d.Stats(), len(socks))
	}
	for i, p := range ps {
		proto := TCP
		if strings.HasPrefix(names[i], "udp") {
			proto = UDP
		}
		a := addrs[i]
		if p.Proto() != proto || p.LocalAddr() != a || !p.IsServer() || p.Family() != FamilyOf(a.Addr()) {
			t.Errorf("%s: pipe %v %v", names[i], p.Proto(), p.LocalAddr())
		}
		if got := d.Lookup(FamilyOf(a.Addr()), proto, a.Port(), a.Addr()); got != p {
			t.Errorf("%s: Lookup = %v", names[i], got)
		}
		if f := socks[i].File; f.Fd() != ^uintptr(0) {
			t.Errorf("%s: File not closed", names[i])
		}
	}
	actCheckEcho(t, names, addrs)

	// A callback set later reaches adopted listeners too.
	var mu sync.Mutex
	seen := 0
	d.SetOnMsg(MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		mu.Lock()
		seen++
		mu.Unlock()
		p.Send(msg, from)
	}))
	actCheckEcho(t, names, addrs)
	mu.Lock()
	if seen != len(addrs) {
		t.Errorf("SetOnMsg: new callback saw %d messages, want %d", seen, len(addrs))
	}
	mu.Unlock()

	// A listener closed by its owner leaves the daemon.
	ps[0].Close()
	<-ps[0].Done() // Close does not wait
	if d.Len() != len(ps)-1 {
		t.Errorf("after closing one: Len %d", d.Len())
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d.Len() != 0 {
		t.Fatal("listeners left after Shutdown")
	}
}

// TestActivationAdoptAllOrNothing: a socket the daemon cannot serve, or one
// that conflicts with a listener it has, fails the call, and every socket
// passed is closed (the ports are free again).
func TestActivationAdoptAllOrNothing(t *testing.T) {
	names, addrs, files := actSockets(t)
	socks := make([]ActivatedSocket, len(files))
	for i, f := range files {
		socks[i] = ActivatedSocket{Name: names[i], FD: int(f.Fd()), File: f}
	}
	// A Unix socket among them.
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	uf, err := ul.(*net.UnixListener).File()
	ul.Close()
	if err != nil {
		t.Fatal(err)
	}
	socks = append(socks, ActivatedSocket{Name: "unix", FD: int(uf.Fd()), File: uf})

	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	ps, err := d.Adopt(context.Background(), socks)
	var se *ActivatedSocketError
	if ps != nil || !errors.Is(err, ErrSocketUnsupported) || !errors.As(err, &se) || se.Name != "unix" || !strings.Contains(se.Kind, "unix") {
		t.Fatalf("Adopt = %v, %v", ps, err)
	}
	t.Log(err)
	if d.Len() != 0 {
		t.Fatalf("%d listeners after a failed Adopt", d.Len())
	}
	for _, s := range socks {
		if s.File.Fd() != ^uintptr(0) {
			t.Errorf("%s: File not closed", s.Name)
		}
	}
	actCheckFree(t, names, addrs)

	// The daemon already listens on the address: ErrAddrInUse, nothing adopted.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf2, _ := l.(*net.TCPListener).File()
	lf3, _ := l.(*net.TCPListener).File()
	l.Close()
	if _, err := d.Adopt(context.Background(), []ActivatedSocket{{Name: "a", FD: 3, File: lf2}}); err != nil {
		t.Fatal(err)
	}
	_, err = d.Adopt(context.Background(), []ActivatedSocket{{Name: "b", FD: 4, File: lf3}})
	if !errors.Is(err, ErrAddrInUse) || !errors.As(err, &se) || se.Name != "b" || d.Len() != 1 {
		t.Fatalf("second Adopt of one address: %v (Len %d)", err, d.Len())
	}
	// MaxListeners applies.
	d.MaxListeners = 1
	_, addrs2, files2 := actSockets(t)
	_, err = d.Adopt(context.Background(), []ActivatedSocket{{Name: "c", FD: 5, File: files2[0]}})
	var le *LimitError
	if !errors.As(err, &le) || d.Len() != 1 {
		t.Fatalf("over MaxListeners: %v", err)
	}
	actCheckFree(t, []string{"tcp4"}, addrs2[:1])
	d.Close()
	if _, err := d.Adopt(context.Background(), []ActivatedSocket{{Name: "d", FD: 6, File: files2[1]}}); !errors.Is(err, ErrDaemonClosed) {
		t.Fatalf("Adopt after Close: %v", err)
	}
	if files2[1].Fd() != ^uintptr(0) {
		t.Fatal("Adopt after Close left its File open")
	}
}

// actCheckFree checks that nothing holds the sockets any more: TCP connections
// are refused, and the UDP port can be bound again.
func actCheckFree(t *testing.T, names []string, addrs []netip.AddrPort) {
	t.Helper()
	for i, a := range addrs {
		if strings.HasPrefix(names[i], "tcp") {
			if c, err := net.DialTimeout("tcp", a.String(), 2*time.Second); err == nil {
				c.Close()
				t.Errorf("%s %v still accepts connections", names[i], a)
			}
			continue
		}
		pc, err := net.ListenPacket("udp", a.String())
		if err != nil {
			t.Errorf("%s %v still bound: %v", names[i], a, err)
			continue
		}
		pc.Close()
	}
}

// actChildEnv is the variable that makes TestActivationChild run, and says
// what it does.
const actChildEnv = "P2PD_ACTIVATION_CHILD"

// actStartChild runs TestActivationChild in a new process with files as
// descriptors 3, 4, ... and the given variables, the way systemd starts a
// socket-activated service. With realPID, LISTEN_PID is the child's own PID,
// set by a shell that then execs the test binary (systemd sets it between
// fork and exec); otherwise LISTEN_PID is taken from env.
func actStartChild(t *testing.T, mode string, realPID bool, files []*os.File, env ...string) (*actChild, *bytes.Buffer) {
	t.Helper()
	args := []string{"-test.run=^TestActivationChild$", "-test.v", "-test.count=1"}
	var cmd *exec.Cmd
	if realPID {
		cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, os.Args[0]}, args...)...)
	} else {
		cmd = exec.Command(os.Args[0], args...)
	}
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", actChildEnv:
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, actChildEnv+"="+mode, "LISTEN_FDS="+strconv.Itoa(len(files)))
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &actChild{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("child output:\n%s", out)
		}
	})
	// The child holds its own copies now.
	for _, f := range files {
		f.Close()
	}
	return c, out
}

type actChild struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
	err  error
}

// actWaitChild waits for the child to exit, at most d, and returns its
// error, or an error if TestActivationChild did not run and pass.
func actWaitChild(t *testing.T, c *actChild, d time.Duration) error {
	t.Helper()
	select {
	case <-c.done:
		if c.err == nil && !strings.Contains(c.out.String(), "--- PASS: TestActivationChild") {
			return errors.New("TestActivationChild did not pass")
		}
		return c.err
	case <-time.After(d):
		t.Fatalf("child still running after %v", d)
		return nil
	}
}

// notifySocket listens where the child's sd_notify messages go.
func actNotifySocket(t *testing.T) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

// actReadNotify returns the next sd_notify message.
func actReadNotify(t *testing.T, c *net.UnixConn, d time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

// TestActivationSystemd passes real listening sockets to a new process the
// way systemd does (descriptors from 3, LISTEN_PID set to the new process's
// PID, LISTEN_FDS, LISTEN_FDNAMES, NOTIFY_SOCKET); the child adopts them,
// says READY=1, and echoes over TCP and UDP until SIGTERM, when it says
// STOPPING=1 and exits 0.
func TestActivationSystemd(t *testing.T) {
	names, addrs, files := actSockets(t)
	nc, npath := actNotifySocket(t)
	cmd, _ := actStartChild(t, "serve", true, files, "LISTEN_FDNAMES="+strings.Join(names, ":"), "NOTIFY_SOCKET="+npath)

	msg := actReadNotify(t, nc, 60*time.Second)
	if !strings.HasPrefix(msg, "READY=1\n") || !strings.Contains(msg, fmt.Sprintf("STATUS=serving %d activated sockets", len(files))) {
		t.Fatalf("first notification %q", msg)
	}
	t.Logf("child says %q", msg)
	actCheckEcho(t, names, addrs)

	if err := cmd.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := actReadNotify(t, nc, 30*time.Second); msg != NotifyStopping {
		t.Fatalf("second notification %q", msg)
	}
	if err := actWaitChild(t, cmd, 30*time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
	actCheckFree(t, names, addrs)
}

// TestActivationSystemdBad passes a TCP listener and a UDP socket together
// with a Unix socket, a connected TCP socket (as Accept=yes would) and a
// pipe: the child's ListenActivated fails, naming the three, and closes
// everything.
func TestActivationSystemdBad(t *testing.T) {
	names, addrs, files := actSockets(t)
	names, addrs, files = names[:2], addrs[:2], files[:2]
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	uf, _ := ul.(*net.UnixListener).File()
	ul.Close()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cc, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cf, _ := cc.(*net.TCPConn).File()
	cc.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	all := append(files, uf, cf, pr)
	var addrList []string
	for _, a := range addrs {
		addrList = append(addrList, a.String())
	}
	cmd, _ := actStartChild(t, "bad", true, all,
		"LISTEN_FDNAMES="+strings.Join(append(names, "unix", "conn", "pipe"), ":"),
		"P2PD_TEST_ADDRS="+strings.Join(addrList, ","))
	if err := actWaitChild(t, cmd, 60*time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
	actCheckFree(t, names, addrs)
}

// TestActivationSystemdWrongPID passes sockets with LISTEN_PID set to
// another process's PID: the child must leave them alone.
func TestActivationSystemdWrongPID(t *testing.T) {
	_, _, files := actSockets(t)
	cmd, _ := actStartChild(t, "wrongpid", false, files[:1], "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	if err := actWaitChild(t, cmd, 60*time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
}

// TestActivationSystemdNotOpen: LISTEN_FDS announces descriptors that are
// not open.
func TestActivationSystemdNotOpen(t *testing.T) {
	_, _, files := actSockets(t)
	cmd, _ := actStartChild(t, "notopen", true, files[:1], "LISTEN_FDS=1000")
	if err := actWaitChild(t, cmd, 60*time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
}

// TestActivationChild is the activated process of the tests above; it
// skips unless P2PD_ACTIVATION_CHILD says what to do.
func TestActivationChild(t *testing.T) {
	mode := os.Getenv(actChildEnv)
	if mode == "" {
		// The child process's entry point (TestActivationSystemd* start
		// it): in the parent there is nothing to do, and nothing to skip.
		return
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "serve":
		actChildServe(t, n)
	case "bad":
		actChildBad(t, n)
	case "notopen":
		// LISTEN_FDS says more descriptors than were passed.
		socks, err := ActivationFiles(true)
		var ee *ActivationEnvError
		if socks != nil || !errors.Is(err, ErrActivationEnv) || !errors.As(err, &ee) || ee.Var != "LISTEN_FDS" {
			t.Fatalf("ActivationFiles = %v, %v", socks, err)
		}
		t.Log(err)
	case "wrongpid":
		_, err := ActivationFiles(false)
		if !errors.Is(err, ErrActivationPID) {
			t.Fatalf("ActivationFiles: %v", err)
		}
		if os.Getenv("LISTEN_FDS") == "" {
			t.Fatal("unsetEnv false unset LISTEN_FDS")
		}
		// Not ours: not even made close-on-exec.
		flags, err := unix.FcntlInt(3, unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			t.Fatalf("descriptor 3: flags %#x, %v", flags, err)
		}
	default:
		t.Fatalf("mode %q", mode)
	}
}

func actChildServe(t *testing.T, n int) {
	wantNames := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	socks, err := ActivationFiles(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			t.Errorf("%s still set", v)
		}
	}
	if len(socks) != n {
		t.Fatalf("%d sockets, want %d", len(socks), n)
	}
	for i, s := range socks {
		if s.FD != 3+i || s.Name != wantNames[i] || s.File == nil {
			t.Errorf("socket %d: %+v", i, s)
		}
		flags, err := unix.FcntlInt(uintptr(s.FD), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("socket %d: not close-on-exec: %#x, %v", i, flags, err)
		}
	}
	if _, err := ActivationFiles(true); !errors.Is(err, ErrNoActivation) {
		t.Errorf("second ActivationFiles: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	ps, err := d.Adopt(ctx, socks)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		if want := strings.ToUpper(socks[i].Name[:3]); p.Proto().String() != want {
			t.Errorf("%s: adopted as %v", socks[i].Name, p.Proto())
		}
		a := p.LocalAddr()
		if d.Lookup(FamilyOf(a.Addr()), p.Proto(), a.Port(), a.Addr()) != p {
			t.Errorf("%s: Lookup(%v) does not find it", socks[i].Name, a)
		}
	}
	if t.Failed() {
		return
	}
	if sent, err := Notify(fmt.Sprintf("%s\nSTATUS=serving %d activated sockets", NotifyReady, len(ps))); !sent || err != nil {
		t.Fatalf("Notify: %v, %v", sent, err)
	}
	<-ctx.Done()
	if sent, err := Notify(NotifyStopping); !sent || err != nil {
		t.Errorf("Notify: %v, %v", sent, err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
}

func actChildBad(t *testing.T, n int) {
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	ps, err := d.ListenActivated(context.Background())
	if ps != nil || err == nil {
		t.Fatalf("ListenActivated = %v, %v", ps, err)
	}
	t.Log(err)
	if !errors.Is(err, ErrSocketUnsupported) {
		t.Errorf("not ErrSocketUnsupported: %v", err)
	}
	var bad []string
	for _, e := range err.(interface{ Unwrap() error }).Unwrap().(interface{ Unwrap() []error }).Unwrap() {
		var se *ActivatedSocketError
		if !errors.As(e, &se) {
			t.Errorf("not an *ActivatedSocketError: %v", e)
			continue
		}
		bad = append(bad, fmt.Sprintf("%d:%s", se.FD, se.Name))
	}
	if got := strings.Join(bad, " "); got != "5:unix 6:conn 7:pipe" {
		t.Errorf("failed sockets %q", got)
	}
	if d.Len() != 0 {
		t.Errorf("%d listeners", d.Len())
	}
	// Every passed descriptor is closed, and no duplicate holds the
	// sockets: the TCP port refuses connections, the UDP port binds.
	for fd := 3; fd < 3+n; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
			t.Errorf("descriptor %d still open (%v)", fd, err)
		}
	}
	addrs := strings.Split(os.Getenv("P2PD_TEST_ADDRS"), ",")
	var aps []netip.AddrPort
	for _, a := range addrs {
		aps = append(aps, netip.MustParseAddrPort(a))
	}
	actCheckFree(t, []string{"tcp4", "udp4"}, aps)
	if _, err := d.ListenActivated(context.Background()); !errors.Is(err, ErrNoActivation) {
		t.Errorf("second ListenActivated: %v", err)
	}
}
