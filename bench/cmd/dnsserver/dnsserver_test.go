package main

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

func TestServe(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, impl := range []string{"p2pd", "miekg"} {
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(impl+"/"+proto, func(t *testing.T) {
				port, err := loopback.FreePort(lo)
				if err != nil {
					t.Fatal(err)
				}
				addr := netip.AddrPortFrom(lo, port)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var shutdown func() error
				if impl == "p2pd" {
					shutdown, err = serveP2PD(ctx, proto, addr)
				} else {
					shutdown, err = serveMiekg(proto, addr)
				}
				if err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := shutdown(); err != nil {
						t.Error(err)
					}
				}()
				c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
				for _, tc := range []struct {
					name    string
					qtype   uint16
					answers int
				}{{"x.bench.test.", dns.TypeA, 1}, {"y.example.", dns.TypeA, 1}, {"x.bench.test.", dns.TypeAAAA, 0}} {
					q := new(dns.Msg)
					q.SetQuestion(tc.name, tc.qtype)
					r, _, err := c.Exchange(q, addr.String())
					if err != nil {
						t.Fatalf("%s %s: %v", tc.name, dns.TypeToString[tc.qtype], err)
					}
					if r.Rcode != dns.RcodeSuccess || r.Id != q.Id || len(r.Answer) != tc.answers {
						t.Fatalf("%s %s: reply %v", tc.name, dns.TypeToString[tc.qtype], r)
					}
					if tc.answers == 1 {
						a, ok := r.Answer[0].(*dns.A)
						if !ok || !a.A.Equal(answerIP) || a.Hdr.Name != tc.name {
							t.Fatalf("%s: answer %v", tc.name, r.Answer[0])
						}
					}
				}
			})
		}
	}
}
