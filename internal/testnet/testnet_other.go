//go:build !linux

package testnet

import (
	"net/netip"
	"os/exec"
	"testing"
)

// Without Linux there are no namespaces: New skips the test through
// Require, so the methods below are never reached from a test that
// called New; they fail loudly if they are.

const errNeedLinux = "testnet: network namespaces need Linux"

// New calls [Require], which skips the test on this system.
func New(t testing.TB) *Net {
	t.Helper()
	Require(t)
	t.Fatal(errNeedLinux) // not reached: Require skipped
	return nil
}

// AddHost is not supported on this system.
func (n *Net) AddHost(name string) *Host { panic(errNeedLinux) }

// Link is not supported on this system.
func (n *Net) Link(a *Host, ac IfConfig, b *Host, bc IfConfig) { panic(errNeedLinux) }

// AddDummy is not supported on this system.
func (h *Host) AddDummy(c IfConfig) { panic(errNeedLinux) }

// WaitDAD is not supported on this system.
func (h *Host) WaitDAD(t testing.TB, ifname string) { t.Helper(); t.Fatal(errNeedLinux) }

// IP is not supported on this system.
func (h *Host) IP(t testing.TB, args ...string) []byte { t.Helper(); t.Fatal(errNeedLinux); return nil }

// TryIP is not supported on this system.
func (h *Host) TryIP(args ...string) ([]byte, error) { return nil, errUnsupported{} }

// Interfaces is not supported on this system.
func (h *Host) Interfaces(t testing.TB) []Iface { t.Helper(); t.Fatal(errNeedLinux); return nil }

// Interface is not supported on this system.
func (h *Host) Interface(t testing.TB, ifname string) Iface {
	t.Helper()
	t.Fatal(errNeedLinux)
	return Iface{}
}

// AddAddr is not supported on this system.
func (h *Host) AddAddr(t testing.TB, ifname, cidr string, nodad bool) {
	t.Helper()
	t.Fatal(errNeedLinux)
}

// DelAddr is not supported on this system.
func (h *Host) DelAddr(t testing.TB, ifname, cidr string) { t.Helper(); t.Fatal(errNeedLinux) }

// SetUp is not supported on this system.
func (h *Host) SetUp(t testing.TB, ifname string) { t.Helper(); t.Fatal(errNeedLinux) }

// SetDown is not supported on this system.
func (h *Host) SetDown(t testing.TB, ifname string) { t.Helper(); t.Fatal(errNeedLinux) }

// Command is not supported on this system: the command fails when run.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Err = errUnsupported{}
	return cmd
}

// Sysctl is not supported on this system.
func (h *Host) Sysctl(t testing.TB, key, value string) { t.Helper(); t.Fatal(errNeedLinux) }

// Do is not supported on this system.
func (h *Host) Do(t testing.TB, fn func()) { t.Helper(); t.Fatal(errNeedLinux) }

// LinkLocal is not supported on this system.
func (h *Host) LinkLocal(t testing.TB, ifname string) netip.Addr {
	t.Helper()
	t.Fatal(errNeedLinux)
	return netip.Addr{}
}

type errUnsupported struct{}

func (errUnsupported) Error() string { return errNeedLinux }
