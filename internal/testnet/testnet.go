// Package testnet builds throwaway network topologies in Linux network
// namespaces, for tests.
//
// A test calls [New], adds hosts (one namespace each) with [Net.AddHost],
// joins them with veth pairs ([Net.Link]) or gives them standalone
// interfaces ([Host.AddDummy]), then runs code inside a host with
// [Host.Do] or a command with [Host.Command]. Every namespace is removed
// when the test ends. Nothing is ever created in the root namespace.
//
//	n := testnet.New(t)
//	a, b := n.AddHost("a"), n.AddHost("b")
//	n.Link(a, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.77.0.1/24"}},
//		b, testnet.IfConfig{Name: "eth1", Addrs: []string{"10.77.0.2/24"}})
//	a.Do(t, func() { ln, err = net.Listen("tcp", "10.77.0.1:0") })
//
// It needs Linux, root and iproute2; elsewhere [Require] skips the test.
//
// # Pitfalls
//
//   - Failures are reported on the testing.TB given to [New] (methods
//     without a t) or to the method; call them from the test goroutine.
//   - A zone is an interface name resolved in the namespace of the calling
//     thread: dial "fe80::1%eth1" inside [Host.Do] of the host that owns
//     eth1. To reach a peer's link-local address, use the peer's address
//     with your own interface as zone: peerLL.WithZone(myIf).
//   - The kernel flushes an interface's IPv6 addresses when it is set down
//     (net.ipv6.conf.*.keep_addr_on_down=0, the default); set that sysctl
//     with [Host.Sysctl] when a test needs them kept.
//   - A socket made inside [Host.Do] keeps its namespace (and interfaces)
//     alive after the namespace is deleted: close it before the test ends.
//   - Kernels without the dummy driver get an ifb interface from
//     [Host.AddDummy]: same flags (NOARP, no DAD), kind "ifb".
package testnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Net is a set of hosts (network namespaces) that belong to one test.
// Its methods may be called from several goroutines, but they report
// failures with t.Fatalf, which only the test goroutine may call.
type Net struct {
	t testing.TB

	mu    sync.Mutex
	hosts []*Host
}

// Host is one network namespace.
type Host struct {
	Name string // logical name given to AddHost
	NS   string // real name, as shown by `ip netns list`

	n *Net

	mu    sync.Mutex
	peers map[string]peerRef // veth name -> other end
}

type peerRef struct {
	h      *Host
	ifname string
}

// IfConfig configures one interface: a side of a veth pair or a dummy.
type IfConfig struct {
	Name   string   // interface name inside the host (<=15 chars)
	Addrs  []string // CIDRs: "10.77.0.1/24", "2001:db8:77::1/64", "fd00::1/64"; any mix, may be empty
	Down   bool     // leave the link down (addresses still assigned)
	NoIPv6 bool     // disable IPv6 on this interface (no link-local): an IPv4-only interface
	NoDAD  bool     // turn DAD off on this interface (accept_dad=0, IPv6 addrs added with nodad)
}

// Iface is one interface as reported by `ip -j addr`.
type Iface struct {
	Index     int
	Name      string
	Flags     []string // "UP", "LOWER_UP", "NO-CARRIER", "LOOPBACK", ...
	OperState string   // "UP", "DOWN", "UNKNOWN", "LOWERLAYERDOWN", ...
	MTU       int
	Addrs     []IfAddr
}

// HasFlag reports whether f (such as "UP") is among the interface flags.
func (i Iface) HasFlag(f string) bool { return slices.Contains(i.Flags, f) }

// IfAddr is one address of an [Iface].
type IfAddr struct {
	Prefix    netip.Prefix // host address and prefix length, never zoned
	Scope     string       // "global", "link", "host"
	Tentative bool         // IPv6 DAD not finished: bind fails with EADDRNOTAVAIL
	DADFailed bool
}

// Require skips the test unless it can build namespaces: Linux, root
// (euid 0) and `ip` on PATH. When the environment has CI=true it fails
// the test instead, since a skip in CI hides failures.
func Require(t testing.TB) {
	t.Helper()
	_, err := exec.LookPath("ip")
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	msg, fatal := requirement(runtime.GOOS, os.Geteuid(), err == nil, ci)
	switch {
	case msg == "":
	case fatal:
		t.Fatal(msg)
	default:
		t.Skip(msg)
	}
}

// SkipUnlessCI skips the test for a missing prerequisite, except in CI
// (CI=true), where it fails the test: a skip in CI hides failures.
func SkipUnlessCI(t testing.TB, format string, args ...any) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("CI=true, so this is a failure, not a skip: "+format, args...)
	}
	t.Skipf(format, args...)
}

// requirement is the decision of Require: msg is empty when namespaces
// can be built, otherwise fatal says whether to fail rather than skip.
func requirement(goos string, euid int, haveIP, ci bool) (msg string, fatal bool) {
	switch {
	case goos != "linux":
		msg = "testnet: network namespaces need Linux"
	case euid != 0:
		msg = "testnet: needs root and iproute2: run `sudo -E env PATH=$PATH go test ./...`"
	case !haveIP:
		msg = "testnet: needs iproute2 (`ip` is not on PATH): apt-get install -y iproute2"
	default:
		return "", false
	}
	if ci {
		// Linux-only tests on another OS are not a CI failure.
		return msg + " (CI=true: failing instead of skipping)", goos == "linux"
	}
	return msg, false
}

// validate checks c before anything is created.
func (c IfConfig) validate() error {
	if c.Name == "" || len(c.Name) > 15 || c.Name == "." || c.Name == ".." ||
		strings.ContainsAny(c.Name, "/: \t\n%") {
		return fmt.Errorf("testnet: bad interface name %q (1 to 15 chars, no '/', ':', '%%' or space)", c.Name)
	}
	for _, a := range c.Addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return fmt.Errorf("testnet: interface %s: %v", c.Name, err)
		}
		if p.Addr().Is6() && c.NoIPv6 {
			return fmt.Errorf("testnet: interface %s: IPv6 address %s on a NoIPv6 interface", c.Name, a)
		}
	}
	return nil
}

// JSON of `ip -j addr`.
type ipLink struct {
	Index     int      `json:"ifindex"`
	Name      string   `json:"ifname"`
	Flags     []string `json:"flags"`
	OperState string   `json:"operstate"`
	MTU       int      `json:"mtu"`
	AddrInfo  []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
		Scope     string `json:"scope"`
		Tentative bool   `json:"tentative"`
		DADFailed bool   `json:"dadfailed"`
	} `json:"addr_info"`
}

// parseIPAddr parses the output of `ip -j addr`.
func parseIPAddr(out []byte) ([]Iface, error) {
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("testnet: parsing `ip -j addr`: %v", err)
	}
	var ifs []Iface
	for _, l := range links {
		if l.Name == "" {
			continue // some iproute2 versions print {} for filtered links
		}
		i := Iface{Index: l.Index, Name: l.Name, Flags: l.Flags, OperState: l.OperState, MTU: l.MTU}
		for _, a := range l.AddrInfo {
			if a.Family != "inet" && a.Family != "inet6" {
				continue
			}
			addr, err := netip.ParseAddr(a.Local)
			if err != nil {
				return nil, fmt.Errorf("testnet: parsing `ip -j addr`: %v", err)
			}
			p := netip.PrefixFrom(addr, a.PrefixLen) // keeps the host bits
			if !p.IsValid() {
				return nil, fmt.Errorf("testnet: parsing `ip -j addr`: bad prefix length %d for %s", a.PrefixLen, addr)
			}
			i.Addrs = append(i.Addrs, IfAddr{Prefix: p, Scope: a.Scope, Tentative: a.Tentative, DADFailed: a.DADFailed})
		}
		ifs = append(ifs, i)
	}
	return ifs, nil
}

// dadState says whether DAD is over on i. needLL asks for an IPv6
// link-local address too. pending describes what is still awaited;
// failed is set when an address failed DAD.
func dadState(i Iface, needLL bool) (pending string, failed error) {
	haveLL := false
	var tentative []string
	for _, a := range i.Addrs {
		if !a.Prefix.Addr().Is6() {
			continue
		}
		if a.DADFailed {
			return "", fmt.Errorf("testnet: DAD failed for %s on %s (duplicate address?)", a.Prefix, i.Name)
		}
		if a.Tentative {
			tentative = append(tentative, a.Prefix.String())
		}
		if a.Prefix.Addr().IsLinkLocalUnicast() {
			haveLL = true
		}
	}
	switch {
	case len(tentative) > 0:
		return "tentative: " + strings.Join(tentative, ", "), nil
	case needLL && !haveLL:
		return "no fe80:: link-local address yet", nil
	}
	return "", nil
}

// nsName is the real namespace name: prefix, pid namespace, pid,
// sequence number, then the logical name for people reading `ip netns`.
func nsName(pidNS uint64, pid int, seq uint64, logical string) string {
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, logical)
	if len(clean) > 24 {
		clean = clean[:24]
	}
	return fmt.Sprintf("%s-%d-%d-%d-%s", nsPrefix, pidNS, pid, seq, clean)
}

const nsPrefix = "p2pdt"

// parseNSName returns the pid namespace and pid that made a namespace
// named by nsName; ok is false for any other name.
func parseNSName(name string) (pidNS uint64, pid int, ok bool) {
	f := strings.SplitN(name, "-", 5)
	if len(f) != 5 || f[0] != nsPrefix {
		return 0, 0, false
	}
	pidNS, err1 := strconv.ParseUint(f[1], 10, 64)
	pid, err2 := strconv.Atoi(f[2])
	_, err3 := strconv.ParseUint(f[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || pid <= 0 {
		return 0, 0, false
	}
	return pidNS, pid, true
}

// WarmGoroutines runs n goroutines at once and lets them end, so that the
// runtime has that many goroutine structures to reuse: it makes them once,
// at its highest count of goroutines, and keeps them. A memory test whose
// baseline comes after it counts what its traffic costs, not those (idle
// pipes park without a goroutine, and the traffic wakes each into one).
func WarmGoroutines(n int) {
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range n {
		wg.Go(func() { <-release })
	}
	close(release)
	wg.Wait()
}
