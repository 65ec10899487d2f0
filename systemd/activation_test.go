//go:build unix

package systemd

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
	"syscall"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/internal/socktest"
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
		envVar    string // the *EnvError's Var, if any
		wantNoErr bool
	}{
		{name: "unset", env: nil, is: []error{ErrNoActivation}, notIs: []error{ErrListenEnv, ErrListenPID}},
		{name: "names only", env: map[string]string{"LISTEN_FDNAMES": "a"}, is: []error{ErrNoActivation}},
		{name: "one, no names", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1"},
			n: 1, names: []string{"unknown"}, wantNoErr: true},
		{name: "three named", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "web:dns:"},
			n: 3, names: []string{"web", "dns", ""}, wantNoErr: true},
		{name: "fds=0", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "0"},
			is: []error{ErrNoActivation}, notIs: []error{ErrListenEnv}, envVar: "LISTEN_FDS"},
		{name: "wrong pid", env: map[string]string{"LISTEN_PID": "4243", "LISTEN_FDS": "2"},
			is: []error{ErrNoActivation, ErrListenPID}, notIs: []error{ErrListenEnv}, envVar: "LISTEN_PID"},
		{name: "pid missing", env: map[string]string{"LISTEN_FDS": "2"},
			is: []error{ErrNoActivation}, notIs: []error{ErrListenPID, ErrListenEnv}, envVar: "LISTEN_PID"},
		{name: "fds missing", env: map[string]string{"LISTEN_PID": "4242"},
			is: []error{ErrNoActivation}, notIs: []error{ErrListenEnv}, envVar: "LISTEN_FDS"},
		{name: "pid garbage", env: map[string]string{"LISTEN_PID": "42x", "LISTEN_FDS": "1"},
			is: []error{ErrListenEnv}, notIs: []error{ErrNoActivation}, envVar: "LISTEN_PID"},
		{name: "pid negative", env: map[string]string{"LISTEN_PID": "-4242", "LISTEN_FDS": "1"},
			is: []error{ErrListenEnv}, envVar: "LISTEN_PID"},
		{name: "fds garbage", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "two"},
			is: []error{ErrListenEnv}, notIs: []error{ErrNoActivation}, envVar: "LISTEN_FDS"},
		{name: "fds negative", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "-1"},
			is: []error{ErrListenEnv}, envVar: "LISTEN_FDS"},
		{name: "fds huge", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "99999999999999999999"},
			is: []error{ErrListenEnv}, envVar: "LISTEN_FDS"},
		{name: "fds too many", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": strconv.Itoa(maxListenFDs + 1)},
			is: []error{ErrListenEnv}, envVar: "LISTEN_FDS"},
		{name: "fewer names", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b"},
			is: []error{ErrListenEnv}, notIs: []error{ErrNoActivation}, envVar: "LISTEN_FDNAMES"},
		{name: "more names", env: map[string]string{"LISTEN_PID": "4242", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
			is: []error{ErrListenEnv}, envVar: "LISTEN_FDNAMES"},
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
			var ee *EnvError
			if c.envVar != "" && (!errors.As(err, &ee) || ee.Var != c.envVar) {
				t.Errorf("%v: want an *EnvError for %s", err, c.envVar)
			}
			if !strings.HasPrefix(err.Error(), "p2pd: ") || strings.Count(err.Error(), "p2pd: ") != 1 {
				t.Errorf("message %q", err)
			}
		})
	}
}

// TestActivationNotActivated: without the variables, Files and Listen say
// ErrNoActivation and touch nothing.
func TestActivationNotActivated(t *testing.T) {
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		t.Setenv(v, "")
	}
	files, err := Files(true)
	if !errors.Is(err, ErrNoActivation) || files != nil {
		t.Fatalf("Files = %v, %v", files, err)
	}
	d := &p2pd.Daemon{}
	defer d.Close()
	ps, err := Listen(context.Background(), d)
	if !errors.Is(err, ErrNoActivation) || ps != nil || d.Len() != 0 {
		t.Fatalf("Listen = %v, %v", ps, err)
	}
	// Another process's environment: nothing claimed, the variables unset.
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
	t.Setenv("LISTEN_FDS", "1")
	if _, err := Files(true); !errors.Is(err, ErrListenPID) {
		t.Fatalf("wrong pid: %v", err)
	}
	if v, ok := os.LookupEnv("LISTEN_FDS"); ok {
		t.Fatalf("LISTEN_FDS=%q still set", v)
	}
	if _, err := Listen(context.Background(), nil); !errors.Is(err, p2pd.ErrInvalid) {
		t.Fatalf("Listen(nil Daemon) = %v", err)
	}
}

// fdOf is f's descriptor number, read without f.Fd(), which would make the
// socket blocking.
func fdOf(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		t.Fatal(err)
	}
	return fd
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
	names, addrs, files := socktest.Loopback(t)
	nc, npath := actNotifySocket(t)
	cmd, _ := actStartChild(t, "serve", true, files, "LISTEN_FDNAMES="+strings.Join(names, ":"), "NOTIFY_SOCKET="+npath)

	msg := actReadNotify(t, nc, 60*time.Second)
	if !strings.HasPrefix(msg, "READY=1\n") || !strings.Contains(msg, fmt.Sprintf("STATUS=serving %d activated sockets", len(files))) {
		t.Fatalf("first notification %q", msg)
	}
	t.Logf("child says %q", msg)
	socktest.CheckEcho(t, names, addrs)

	if err := cmd.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := actReadNotify(t, nc, 30*time.Second); msg != NotifyStopping {
		t.Fatalf("second notification %q", msg)
	}
	if err := actWaitChild(t, cmd, 30*time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
	socktest.CheckFree(t, names, addrs)
}

// TestActivationSystemdBad passes a TCP listener and a UDP socket together
// with a Unix socket, a connected TCP socket (as Accept=yes would) and a
// pipe: the child's Listen fails, naming the three, and closes
// everything.
func TestActivationSystemdBad(t *testing.T) {
	names, addrs, files := socktest.Loopback(t)
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
	socktest.CheckFree(t, names, addrs)
}

// TestActivationSystemdWrongPID passes sockets with LISTEN_PID set to
// another process's PID: the child must leave them alone.
func TestActivationSystemdWrongPID(t *testing.T) {
	_, _, files := socktest.Loopback(t)
	cmd, _ := actStartChild(t, "wrongpid", false, files[:1], "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	if err := actWaitChild(t, cmd, 60*time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
}

// TestActivationSystemdNotOpen: LISTEN_FDS announces descriptors that are
// not open.
func TestActivationSystemdNotOpen(t *testing.T) {
	_, _, files := socktest.Loopback(t)
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
		files, err := Files(true)
		var ee *EnvError
		if files != nil || !errors.Is(err, ErrListenEnv) || !errors.As(err, &ee) || ee.Var != "LISTEN_FDS" {
			t.Fatalf("Files = %v, %v", files, err)
		}
		t.Log(err)
	case "wrongpid":
		_, err := Files(false)
		if !errors.Is(err, ErrListenPID) {
			t.Fatalf("Files: %v", err)
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
	files, err := Files(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			t.Errorf("%s still set", v)
		}
	}
	if len(files) != n {
		t.Fatalf("%d sockets, want %d", len(files), n)
	}
	names := make([]string, n)
	for i, f := range files {
		fd := fdOf(t, f)
		if names[i] = f.Name(); fd != 3+i || f.Name() != wantNames[i] {
			t.Errorf("socket %d: descriptor %d, name %q", i, fd, f.Name())
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("socket %d: not close-on-exec: %#x, %v", i, flags, err)
		}
	}
	if _, err := Files(true); !errors.Is(err, ErrNoActivation) {
		t.Errorf("second Files: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	ps, err := d.Adopt(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		if want := strings.ToUpper(names[i][:3]); p.Proto().String() != want {
			t.Errorf("%s: adopted as %v", names[i], p.Proto())
		}
		a := p.LocalAddr()
		if d.Lookup(p2pd.FamilyOf(a.Addr()), p.Proto(), a.Port(), a.Addr()) != p {
			t.Errorf("%s: Lookup(%v) does not find it", names[i], a)
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
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	ps, err := Listen(context.Background(), d)
	if ps != nil || err == nil {
		t.Fatalf("Listen = %v, %v", ps, err)
	}
	t.Log(err)
	if !errors.Is(err, p2pd.ErrSocketUnsupported) {
		t.Errorf("not p2pd.ErrSocketUnsupported: %v", err)
	}
	var bad []string
	for _, e := range err.(interface{ Unwrap() error }).Unwrap().(interface{ Unwrap() []error }).Unwrap() {
		var se *p2pd.AdoptError
		if !errors.As(e, &se) {
			t.Errorf("not an *p2pd.AdoptError: %v", e)
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
	socktest.CheckFree(t, []string{"tcp4", "udp4"}, aps)
	if _, err := Listen(context.Background(), d); !errors.Is(err, ErrNoActivation) {
		t.Errorf("second Listen: %v", err)
	}
}

var echoCB = p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) { p.Send(msg, from) })
