package p2pd_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/p2pd/p2pd"
)

// TestDaemonEchoSocat checks every address a daemon binds with a client that
// is not Go: socat, run in the client namespace, over TCP and UDP, IPv4,
// IPv6 global and IPv6 link-local with zone.
func TestDaemonEchoSocat(t *testing.T) {
	if _, err := exec.LookPath("socat"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("socat is not installed (.ci/run installs it)")
		}
		t.Skip("needs socat: apt-get install -y socat")
	}
	dn := dmSetup(t)
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: dmEchoCB}}
	defer d.Close()
	var ps []*p2pd.Pipe
	var err error
	dn.onSrv(t, func() {
		ps, err = d.ListenAll(context.Background(), []p2pd.Target{dn.eth1}, p2pd.Ports{p2pd.Port(0)},
			[]p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 6 { // (1 IPv4 + 2 IPv6) × 2 protos
		t.Fatalf("%d listeners, want 6", len(ps))
	}
	for _, p := range ps {
		to := p.LocalAddr()
		a := to.Addr()
		if a.Zone() != "" {
			a = a.WithZone("eth1") // cli's own eth1, by name: socat resolves it in cli
		}
		addr := fmt.Sprintf("%s:%s:%d", strings.ToUpper(p.Proto().String()), netip.AddrPortFrom(a, 0).Addr(), to.Port())
		if a.Is6() {
			addr = fmt.Sprintf("%s6:[%s]:%d", strings.ToUpper(p.Proto().String()), a, to.Port())
		}
		msg := "hello " + addr + "\n"
		cmd := dn.cli.Command("socat", "-T", "3", "-t", "1", "-", addr)
		cmd.Stdin = strings.NewReader(msg)
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != msg {
			t.Errorf("socat %s: %q, %v", addr, out, err)
		}
	}
}
