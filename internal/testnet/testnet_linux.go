package testnet

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	nsDir       = "/run/netns" // where `ip netns add` mounts namespaces
	dadTimeout  = 10 * time.Second
	dadInterval = 20 * time.Millisecond
)

var seq atomic.Uint64 // numbers the namespaces of this process

// New calls [Require] and returns an empty topology. t.Cleanup removes
// every namespace it made, also when the test fails or panics. New first
// removes namespaces left by earlier test processes that died.
func New(t testing.TB) *Net {
	t.Helper()
	Require(t)
	sweep(t)
	n := &Net{t: t}
	t.Cleanup(n.cleanup)
	return n
}

func (n *Net) cleanup() {
	n.mu.Lock()
	hosts := n.hosts
	n.hosts = nil
	n.mu.Unlock()
	for _, h := range slices.Backward(hosts) {
		if out, err := exec.Command("ip", "netns", "del", h.NS).CombinedOutput(); err != nil {
			n.t.Errorf("testnet: removing namespace %s of host %s: %v: %s", h.NS, h.Name, err, bytes.TrimSpace(out))
		}
	}
}

// pidNS identifies this process's pid namespace, so that a sweep never
// judges pids of another pid namespace (another container).
func pidNS() uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0
	}
	return st.Ino
}

// sweep removes namespaces made by dead test processes of this pid namespace.
func sweep(t testing.TB) {
	entries, err := os.ReadDir(nsDir)
	if err != nil {
		return // no namespaces at all
	}
	me := pidNS()
	for _, e := range entries {
		ns, pid, ok := parseNSName(e.Name())
		if !ok || ns != me || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			continue // alive (EPERM also means it exists)
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("testnet: sweeping stale namespace %s: %v: %s", e.Name(), err, bytes.TrimSpace(out))
		}
	}
}

// AddHost makes a new namespace with lo up. Host.Name is name; Host.NS
// is unique per process and call. All namespaces get
// net.ipv6.conf.all.accept_dad=0 so that each interface's own accept_dad
// decides (the kernel does DAD if either is set); new interfaces still
// do DAD through default.accept_dad=1.
func (n *Net) AddHost(name string) *Host {
	n.t.Helper()
	n.mu.Lock()
	for _, h := range n.hosts {
		if h.Name == name {
			n.mu.Unlock()
			n.t.Fatalf("testnet: AddHost: host %q already exists", name)
		}
	}
	n.mu.Unlock()
	h := &Host{Name: name, NS: nsName(pidNS(), os.Getpid(), seq.Add(1), name), n: n}
	if out, err := exec.Command("ip", "netns", "add", h.NS).CombinedOutput(); err != nil {
		n.t.Fatalf("testnet: ip netns add %s: %v: %s", h.NS, err, bytes.TrimSpace(out))
	}
	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	h.IP(n.t, "link", "set", "lo", "up")
	if err := h.sysctl("net/ipv6/conf/all/accept_dad", "0"); err != nil {
		n.t.Fatalf("%v", err)
	}
	return h
}

// Link joins a and b with a veth pair, ac configuring a's end and bc b's
// end. The pair is created inside the namespaces, never in the root one.
// When Link returns, each end not Down is up and, if the other end is up
// too, has all its IPv6 addresses, including the fe80:: link-local unless
// NoIPv6, past DAD. An end whose peer is Down has no carrier: its IPv6
// addresses stay tentative (unless NoDAD) until the peer is set up with
// [Host.SetUp], which then waits for both ends.
func (n *Net) Link(a *Host, ac IfConfig, b *Host, bc IfConfig) {
	t := n.t
	t.Helper()
	for _, c := range []IfConfig{ac, bc} {
		if err := c.validate(); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if a == b && ac.Name == bc.Name {
		t.Fatalf("testnet: Link: both ends named %s on host %s", ac.Name, a.Name)
	}
	a.IP(t, "link", "add", ac.Name, "type", "veth", "peer", "name", bc.Name, "netns", b.NS)
	a.setPeer(ac.Name, b, bc.Name)
	b.setPeer(bc.Name, a, ac.Name)
	for _, s := range []struct {
		h *Host
		c IfConfig
	}{{a, ac}, {b, bc}} {
		if err := s.h.configure(s.c); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if ac.Down || bc.Down {
		return // no carrier on either end: nothing can finish DAD
	}
	for _, s := range []struct {
		h      *Host
		ifname string
	}{{a, ac.Name}, {b, bc.Name}} {
		if err := s.h.waitDAD(s.ifname, false); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

// AddDummy adds a standalone interface of type dummy, configured like a
// veth end. Where the kernel lacks the dummy driver it adds an ifb
// interface, which looks the same to tests (NOARP, carrier always on).
func (h *Host) AddDummy(c IfConfig) {
	t := h.n.t
	t.Helper()
	if err := c.validate(); err != nil {
		t.Fatalf("%v", err)
	}
	_, err := h.TryIP("link", "add", c.Name, "type", "dummy")
	if err != nil && strings.Contains(err.Error(), "Unknown device type") {
		_, err = h.TryIP("link", "add", c.Name, "type", "ifb")
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	if err := h.configure(c); err != nil {
		t.Fatalf("%v", err)
	}
	if !c.Down {
		if err := h.waitDAD(c.Name, false); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

func (h *Host) setPeer(ifname string, p *Host, pifname string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.peers == nil {
		h.peers = make(map[string]peerRef)
	}
	h.peers[ifname] = peerRef{p, pifname}
}

// configure sets the sysctls and addresses of an existing, down
// interface, then brings it up unless c.Down. The sysctls come first so
// that the link-local address made on up is already covered.
func (h *Host) configure(c IfConfig) error {
	conf := "net/ipv6/conf/" + c.Name + "/"
	if c.NoIPv6 {
		if err := h.sysctl(conf+"disable_ipv6", "1"); err != nil {
			return err
		}
	}
	if c.NoDAD && !c.NoIPv6 {
		if err := h.sysctl(conf+"accept_dad", "0"); err != nil {
			return err
		}
	}
	for _, a := range c.Addrs {
		args := []string{"addr", "add", a, "dev", c.Name}
		if c.NoDAD && strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		if _, err := h.TryIP(args...); err != nil {
			return err
		}
	}
	if !c.Down {
		if _, err := h.TryIP("link", "set", c.Name, "up"); err != nil {
			return err
		}
	}
	return nil
}

// WaitDAD waits until no IPv6 address of ifname is tentative and, if the
// interface is up with carrier and IPv6 on, it has its fe80:: link-local
// address. It polls `ip -j addr` and fails the test when DAD fails, when
// the interface has no carrier (down, or its veth peer is down) while
// addresses are tentative, or after 10 s.
func (h *Host) WaitDAD(t testing.TB, ifname string) {
	t.Helper()
	if err := h.waitDAD(ifname, true); err != nil {
		t.Fatalf("%v", err)
	}
}

// waitDAD is WaitDAD; unless strict, an interface without carrier is
// not an error (nothing to wait for until it gets one).
func (h *Host) waitDAD(ifname string, strict bool) error {
	ipv6 := h.readSysctl("net/ipv6/conf/"+ifname+"/disable_ipv6") == "0" &&
		h.readSysctl("net/ipv6/conf/"+ifname+"/addr_gen_mode") != "1" // 1: none
	deadline := time.Now().Add(dadTimeout)
	for {
		i, err := h.iface(ifname)
		if err != nil {
			return err
		}
		carrier := i.HasFlag("UP") && i.HasFlag("LOWER_UP")
		pending, err := dadState(i, ipv6 && carrier)
		switch {
		case err != nil:
			return fmt.Errorf("%w (host %s)", err, h.Name)
		case pending == "":
			return nil
		case !carrier && !strict:
			return nil
		case !carrier:
			return fmt.Errorf("testnet: WaitDAD: %s on host %s has no carrier (down, or its peer is down): DAD cannot finish (%s)", ifname, h.Name, pending)
		case time.Now().After(deadline):
			return fmt.Errorf("testnet: WaitDAD: %s on host %s not ready after %v: %s", ifname, h.Name, dadTimeout, pending)
		}
		time.Sleep(dadInterval)
	}
}

// IP runs `ip -n NS args...` and returns its output, failing the test
// with ip's stderr on error.
func (h *Host) IP(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := h.TryIP(args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// TryIP runs `ip -n NS args...`; the error includes ip's stderr.
func (h *Host) TryIP(args ...string) ([]byte, error) {
	cmd := exec.Command("ip", append([]string{"-n", h.NS}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("testnet: ip -n %s %s (host %s): %v: %s",
			h.NS, strings.Join(args, " "), h.Name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// Interfaces returns the host's interfaces and addresses, from `ip -j addr`.
func (h *Host) Interfaces(t testing.TB) []Iface {
	t.Helper()
	ifs, err := parseIPAddr(h.IP(t, "-j", "addr"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	return ifs
}

// Interface returns one interface of the host, from `ip -j addr`.
func (h *Host) Interface(t testing.TB, ifname string) Iface {
	t.Helper()
	i, err := h.iface(ifname)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return i
}

func (h *Host) iface(ifname string) (Iface, error) {
	out, err := h.TryIP("-j", "addr", "show", "dev", ifname)
	if err != nil {
		return Iface{}, err
	}
	ifs, err := parseIPAddr(out)
	if err != nil {
		return Iface{}, err
	}
	if len(ifs) != 1 {
		return Iface{}, fmt.Errorf("testnet: host %s: %d interfaces named %s", h.Name, len(ifs), ifname)
	}
	return ifs[0], nil
}

// AddAddr adds cidr to ifname (with nodad if asked and IPv6) and, if the
// interface has carrier, waits until the address is past DAD.
func (h *Host) AddAddr(t testing.TB, ifname, cidr string, nodad bool) {
	t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Fatalf("testnet: AddAddr: %v", err)
	}
	args := []string{"addr", "add", cidr, "dev", ifname}
	if nodad && p.Addr().Is6() {
		args = append(args, "nodad")
	}
	h.IP(t, args...)
	if err := h.waitDAD(ifname, false); err != nil {
		t.Fatalf("%v", err)
	}
}

// DelAddr removes cidr from ifname.
func (h *Host) DelAddr(t testing.TB, ifname, cidr string) {
	t.Helper()
	h.IP(t, "addr", "del", cidr, "dev", ifname)
}

// SetUp brings ifname up and waits for DAD on it and, for a veth whose
// other end is up, on that end too (both just got carrier).
func (h *Host) SetUp(t testing.TB, ifname string) {
	t.Helper()
	h.IP(t, "link", "set", ifname, "up")
	if err := h.waitDAD(ifname, false); err != nil {
		t.Fatalf("%v", err)
	}
	h.mu.Lock()
	p, ok := h.peers[ifname]
	h.mu.Unlock()
	if ok {
		if err := p.h.waitDAD(p.ifname, false); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

// SetDown sets ifname down. The kernel then drops its IPv6 addresses
// unless keep_addr_on_down is set; a veth peer loses carrier.
func (h *Host) SetDown(t testing.TB, ifname string) {
	t.Helper()
	h.IP(t, "link", "set", ifname, "down")
}

// Command returns a command that runs `ip netns exec NS name args...`.
// The caller must wait for it before the test ends.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Sysctl writes a sysctl of the host's namespace, such as
// "net.ipv6.conf.eth1.keep_addr_on_down" or, for interface names with
// dots, the path form "net/ipv6/conf/eth1.5/keep_addr_on_down".
func (h *Host) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	if err := h.sysctl(key, value); err != nil {
		t.Fatalf("%v", err)
	}
}

// sysctl writes /proc/sys/path from inside the namespace: /proc/sys/net
// shows the namespace of the thread that opens it.
func (h *Host) sysctl(path, value string) error {
	var err error
	if derr := h.do(func() {
		err = os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644)
	}); derr != nil {
		return derr
	}
	if err != nil {
		return fmt.Errorf("testnet: sysctl %s=%s on host %s: %v", path, value, h.Name, err)
	}
	return nil
}

// readSysctl returns the trimmed value of /proc/sys/path in the
// namespace, or "" if it cannot be read.
func (h *Host) readSysctl(path string) string {
	var b []byte
	if err := h.do(func() { b, _ = os.ReadFile(filepath.Join("/proc/sys", path)) }); err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Do runs fn on the calling goroutine with its OS thread locked and
// switched into the host's namespace, then switches back.
//
// Sockets made in fn belong to the namespace for good and may be used
// from any goroutine afterwards. Goroutines started by fn do NOT run in
// the namespace, nor does anything fn hands to another goroutine (such
// as a net.Dialer with a resolver). fn may call t.FailNow or panic: the
// thread is restored in a defer. If restoring fails, the thread stays
// locked, so the runtime discards it when the goroutine exits.
func (h *Host) Do(t testing.TB, fn func()) {
	t.Helper()
	if err := h.do(fn); err != nil {
		t.Fatalf("%v", err)
	}
}

func (h *Host) do(fn func()) (err error) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("testnet: Do: saving this thread's namespace: %v", err)
	}
	defer unix.Close(orig)
	target, err := unix.Open(filepath.Join(nsDir, h.NS), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("testnet: Do: opening namespace %s of host %s: %v", h.NS, h.Name, err)
	}
	err = unix.Setns(target, unix.CLONE_NEWNET)
	unix.Close(target)
	if err != nil {
		runtime.UnlockOSThread() // setns failed: the thread is unchanged
		return fmt.Errorf("testnet: Do: entering namespace %s of host %s: %v", h.NS, h.Name, err)
	}
	defer func() {
		if rerr := unix.Setns(orig, unix.CLONE_NEWNET); rerr != nil {
			// Stay locked: the runtime ends the thread with the goroutine.
			err = fmt.Errorf("testnet: Do: leaving namespace %s of host %s: %v", h.NS, h.Name, rerr)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
	return nil
}

// LinkLocal returns the fe80:: address of ifname, zoned with ifname.
// The zone only means something inside this host's namespace.
func (h *Host) LinkLocal(t testing.TB, ifname string) netip.Addr {
	t.Helper()
	for _, a := range h.Interface(t, ifname).Addrs {
		if a.Prefix.Addr().Is6() && a.Prefix.Addr().IsLinkLocalUnicast() {
			return a.Prefix.Addr().WithZone(ifname)
		}
	}
	t.Fatalf("testnet: host %s: no IPv6 link-local address on %s", h.Name, ifname)
	return netip.Addr{}
}
