package reach

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExampleReachable runs examples/reachable on the LAN host behind the
// router: it prints its listeners as the world reaches them, through the
// router's public address, and deletes its mappings when it stops.
func TestExampleReachable(t *testing.T) {
	g := newGateNet(t, gateAll)
	bin := filepath.Join(t.TempDir(), "reachable")
	build := exec.Command("go", "build", "-o", bin, "../examples/reachable")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := gateRun(g.lan, 30*time.Second, bin, "-ports", "7007", "-for", "2s", "-stun", g.stun.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("examples/reachable printed:\n%s", out)
	for _, want := range []string{
		"TCP IPv4 10.88.1.2:7007 → 203.0.113.1:7007 (mapping pcp)",
		"UDP IPv4 10.88.1.2:7007 → 203.0.113.1:7007 (mapping pcp), 203.0.113.1:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if ms := g.nftMappings(t); len(ms) != 0 {
		t.Errorf("the router still forwards %v after the example ended", ms)
	}
}
