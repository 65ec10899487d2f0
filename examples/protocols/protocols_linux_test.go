// Package protocols_test runs the examples of this module against real
// clients (dig, coturn's turnutils_stunclient) in network namespaces.
package protocols_test

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pd/p2pd/internal/testnet"
)

// serverNet is two hosts on one link: srv (10.55.0.1, 2001:db8:55::1, and
// its link-local address) runs the example, cli runs the real client.
func serverNet(t *testing.T) (srv, cli *testnet.Host) {
	t.Helper()
	testnet.Require(t)
	n := testnet.New(t)
	srv, cli = n.AddHost("srv"), n.AddHost("cli")
	n.Link(srv, testnet.IfConfig{Name: "eth0", Addrs: []string{"10.55.0.1/24", "2001:db8:55::1/64"}},
		cli, testnet.IfConfig{Name: "eth0", Addrs: []string{"10.55.0.2/24", "2001:db8:55::2/64"}})
	return srv, cli
}

// start builds the example pkg and runs it on srv's eth0 until the test
// ends; it returns the addresses it printed ("UDP 10.55.0.1:5353", ...).
func start(t *testing.T, srv *testnet.Host, pkg string, args ...string) []string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	cmd := srv.Command(bin, append([]string{"-iface", "eth0", "-for", "60s"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	var addrs []string
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s exited before serving", pkg)
			}
			if strings.HasSuffix(l, ": serving") {
				go func() {
					for range lines { // drain
					}
				}()
				return addrs
			}
			if _, a, ok := strings.Cut(l, ": "); ok {
				addrs = append(addrs, a)
			}
		case <-deadline:
			t.Fatalf("%s did not start serving", pkg)
		}
	}
}

// run runs a client on cli, bounded in time.
func run(t *testing.T, cli *testnet.Host, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", cli.NS, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testnet.SkipUnlessCI(t, "%s not installed (apt-get install -y bind9-dnsutils coturn): %v", tool, err)
		}
	}
}

// TestDNSWithDig: dig gets answers from every address the responder bound
// (IPv4, IPv6 global, IPv6 link-local), over UDP and TCP.
func TestDNSWithDig(t *testing.T) {
	need(t, "dig")
	srv, cli := serverNet(t)
	addrs := start(t, srv, "./dns", "-port", "5353")
	var udp, tcp int
	for _, a := range addrs {
		proto, hostport, _ := strings.Cut(a, " ")
		i := strings.LastIndex(hostport, ":")
		host := strings.Trim(hostport[:i], "[]") // a link-local address keeps its zone: eth0 names the link on cli too
		args := []string{"@" + host, "-p", hostport[i+1:], "+time=2", "+tries=2", "+short"}
		if proto == "TCP" {
			args = append(args, "+tcp")
			tcp++
		} else {
			udp++
		}
		if got := strings.TrimSpace(run(t, cli, "dig", append(args, "hello.p2pd.test", "A")...)); got != "192.0.2.1" {
			t.Errorf("%s: hello A = %q", a, got)
		}
		want := "10.55.0.2"
		switch {
		case strings.HasPrefix(host, "fe80:"):
			want = "fe80:"
		case strings.Contains(host, ":"):
			want = "2001:db8:55::2"
		}
		if got := strings.TrimSpace(run(t, cli, "dig", append(args, "whoami.p2pd.test", "TXT")...)); !strings.Contains(got, want) {
			t.Errorf("%s: whoami = %q, want %s", a, got, want)
		}
	}
	if udp < 3 || tcp < 3 {
		t.Fatalf("listeners %v: want IPv4, IPv6 global and link-local, UDP and TCP", addrs)
	}
}

// TestSTUNWithTurnutils: coturn's turnutils_stunclient gets its own
// address back from every address the server bound.
func TestSTUNWithTurnutils(t *testing.T) {
	need(t, "turnutils_stunclient")
	srv, cli := serverNet(t)
	addrs := start(t, srv, "./stunserver", "-port", "3478")
	for _, a := range addrs {
		_, hostport, _ := strings.Cut(a, " ")
		i := strings.LastIndex(hostport, ":")
		host := strings.Trim(hostport[:i], "[]")
		if strings.HasPrefix(host, "fe80:") {
			continue // turnutils_stunclient takes no zone
		}
		out := run(t, cli, "turnutils_stunclient", "-p", hostport[i+1:], host)
		want := "10.55.0.2"
		if strings.Contains(host, ":") {
			want = "2001:db8:55::2"
		}
		if !strings.Contains(out, want) {
			t.Errorf("%s: turnutils_stunclient said:\n%s\nwant the mapped address %s", a, out, want)
		}
	}
}
