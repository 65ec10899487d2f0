package p2pd

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/p2pd/p2pd/internal/testnet"
)

// A call of many binds, made from a thread inside a network namespace,
// binds every socket there, as the Daemon's doc says: 10.44.0.1 exists in
// that namespace only, so a socket bound from any other thread would fail
// with EADDRNOTAVAIL.
func TestOpenManyInNamespace(t *testing.T) {
	testnet.Require(t)
	atLeastTwoProcs(t)
	n := testnet.New(t)
	srv := n.AddHost("srv")
	srv.AddDummy(testnet.IfConfig{Name: "d0", Addrs: []string{"10.44.0.1/24"}, NoIPv6: true})
	r := Route{Family: IPv4, Bound: netip.MustParseAddrPort("10.44.0.1:0")}
	specs := slices.Repeat([]Specific{{Route: r, Proto: UDP}, {Route: r, Proto: TCP}}, pipelineAfter/2+1)
	d := &Daemon{WatchInterval: -1, PipeConfig: PipeConfig{Logger: quietLogger()}}
	defer shutdown(t, d)
	var ps []*Pipe
	var err error
	srv.Do(t, func() { ps, err = d.ListenSpecific(context.Background(), specs) })
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != len(specs) {
		t.Fatalf("%d pipes for %d specs", len(ps), len(specs))
	}
}
