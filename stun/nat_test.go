//go:build linux

package stun

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// TestNATClassify runs the RFC 5780 tests against coturn (two addresses,
// alternate port 3479) from behind the router's masquerade and from the
// router's own public address.
func TestNATClassify(t *testing.T) {
	nn := newNATNet(t)
	ctx := context.Background()
	res := &Resolver{Timeout: 500 * time.Millisecond, RTO: 100 * time.Millisecond}
	cases := []struct {
		host      string
		nic       string
		server    string
		mapping   NATMapping
		filtering NATFiltering
	}{
		// Linux masquerade keeps one mapping per socket (it keeps the
		// port when free) and lets in only the exact peers (conntrack).
		{"client", "10.0.0.2", stunPublic4[0], MappingEndpointIndependent, FilteringAddressPortDependent},
		// masquerade random: a new port for every destination.
		{"client", "10.0.0.3", stunPublic4[0], MappingAddressPortDependent, FilteringAddressPortDependent},
		// NAT66 behaves the same.
		{"client", "fd00:1::2", stunPublic6[0], MappingEndpointIndependent, FilteringAddressPortDependent},
		// The router's own address: no NAT, no firewall.
		{"router", "203.0.113.1", stunPublic4[0], MappingNoNAT, FilteringEndpointIndependent},
		// A public address behind the router, which only routes it.
		// (coturn's second address names itself, port 3479, as its
		// OTHER-ADDRESS: only its first address can run the tests.)
		{"client", "198.51.100.2", stunPublic4[0], MappingNoNAT, FilteringEndpointIndependent},
	}
	for _, c := range cases {
		t.Run(c.host+"/"+c.nic, func(t *testing.T) {
			h := nn.client
			if c.host == "router" {
				h = nn.router
			}
			var b *NATBehavior
			var err error
			h.Do(t, func() { b, err = res.ClassifyNAT(ctx, netip.MustParseAddr(c.nic), c.server) })
			if err != nil {
				t.Fatal(err)
			}
			t.Log(b)
			if b.Mapping != c.mapping || b.Filtering != c.filtering {
				t.Errorf("got %v; want mapping %v, filtering %v", b, c.mapping, c.filtering)
			}
			if !b.Other.IsValid() || b.Other.Addr() == b.Server.Addr() {
				t.Errorf("other address %v, server %v", b.Other, b.Server)
			}
		})
	}

	t.Run("no RFC 5780", func(t *testing.T) {
		var err error
		nn.client.Do(t, func() { _, err = res.ClassifyNAT(ctx, netip.MustParseAddr("10.0.0.2"), nn.liar) })
		if !errors.Is(err, ErrNoRFC5780) {
			t.Fatalf("err = %v, want ErrNoRFC5780", err)
		}
	})
}
