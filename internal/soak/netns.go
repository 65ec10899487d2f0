//go:build linux

package soak

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
)

// The network of the namespace mode: one interface with a primary address
// that serves throughout and a secondary one that comes and goes.
const (
	IfName    = "soak0"
	primary   = "10.99.0.1/24"
	secondary = "10.99.1.1/24"
)

var (
	primaryAddr   = netip.MustParsePrefix(primary).Addr()
	secondaryAddr = netip.MustParsePrefix(secondary).Addr()
)

// ChildEnv marks the re-executed program that runs in the new namespace.
const ChildEnv = "P2PD_SOAK_NETNS"

// InChild reports whether this process is the re-executed child.
func InChild() bool { return os.Getenv(ChildEnv) == "1" }

// ChildCommand returns the program re-executed in a network namespace of
// its own, with the same arguments. The namespace has no name: the kernel
// removes it when the child exits, however it exits, so nothing is left
// behind. Pdeathsig kills the child if the parent dies first.
func ChildCommand() *exec.Cmd {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// SetupNetns builds the network of the namespace mode in the current
// namespace (the child's): lo up, and IfName (dummy, or ifb where the
// kernel has no dummy driver) up with the primary address.
func SetupNetns() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("soak: needs iproute2 (`ip`): %v", err)
	}
	if err := ip("link", "set", "lo", "up"); err != nil {
		return err
	}
	if err := ip("link", "add", IfName, "type", "dummy"); err != nil {
		if err2 := ip("link", "add", IfName, "type", "ifb"); err2 != nil {
			return fmt.Errorf("%v; %v", err, err2)
		}
	}
	if err := ip("addr", "add", primary, "dev", IfName); err != nil {
		return err
	}
	return ip("link", "set", IfName, "up")
}

// ip runs `ip args...` in the current network namespace.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("soak: ip %v: %v: %s", args, err, bytes.TrimSpace(out))
	}
	return nil
}
