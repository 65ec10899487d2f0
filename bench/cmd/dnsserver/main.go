// Command dnsserver is the DNS server of the dnsperf benchmark: it answers
// every A query, for any name, with one fixed A record (192.0.2.1, TTL 60),
// and any other query with an empty NOERROR reply. github.com/miekg/dns is
// the message codec of both implementations:
//
//	p2pd   a Daemon whose MsgCB unpacks the query and sends the packed
//	       reply (TCP with FrameLength16, DNS's 2-byte length prefix), as
//	       examples/protocols/dns serves DNS
//	miekg  miekg/dns's own dns.Server (the ListenAndServe way), the baseline
//
// It serves one protocol on one loopback address, prints "ready <addr>"
// once it serves (port 0 picks a free port), and stops on SIGINT/SIGTERM
// or after -for.
//
//	dnsserver -impl p2pd -proto udp -addr 127.0.0.1:0 -for 5m
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/p2pd/p2pd"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

func main() {
	impl := flag.String("impl", "p2pd", "p2pd or miekg")
	proto := flag.String("proto", "udp", "udp or tcp")
	addrFlag := flag.String("addr", "127.0.0.1:0", "loopback address; port 0 picks a free port")
	lifetime := flag.Duration("for", 10*time.Minute, "hard maximum lifetime")
	flag.Parse()
	if err := run(*impl, *proto, *addrFlag, *lifetime); err != nil {
		fmt.Fprintln(os.Stderr, "dnsserver:", err)
		os.Exit(1)
	}
}

func run(impl, proto, addrFlag string, lifetime time.Duration) error {
	if proto != "udp" && proto != "tcp" {
		return fmt.Errorf("-proto %q: want udp or tcp", proto)
	}
	if lifetime <= 0 {
		return errors.New("-for must be positive")
	}
	addr, err := loopback.ServerAddr(addrFlag)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, lifetime)
	defer cancel()

	var shutdown func() error
	switch impl {
	case "p2pd":
		shutdown, err = serveP2PD(ctx, proto, addr)
	case "miekg":
		shutdown, err = serveMiekg(proto, addr)
	default:
		return fmt.Errorf("-impl %q: want p2pd or miekg", impl)
	}
	if err != nil {
		return fmt.Errorf("%s %s on %v: %w", impl, proto, addr, err)
	}
	fmt.Printf("ready %v\n", addr)
	<-ctx.Done()
	done := make(chan error, 1)
	go func() { done <- shutdown() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s did not stop within 5s", impl)
	}
}

// answerIP is the address of every answer.
var answerIP = net.IPv4(192, 0, 2, 1).To4()

// reply fills resp with the reply to req: one A record for an A query,
// nothing for any other type.
func reply(req, resp *dns.Msg) {
	resp.SetReply(req)
	resp.Authoritative = true
	if q := req.Question[0]; q.Qtype == dns.TypeA && q.Qclass == dns.ClassINET {
		resp.Answer = append(resp.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   answerIP,
		})
	}
}

// serveP2PD serves with a Daemon, one ListenAll on a loopback route.
func serveP2PD(ctx context.Context, proto string, addr netip.AddrPort) (func() error, error) {
	udp := proto == "udp"
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{
		Framing: p2pd.FrameLength16, // TCP only
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
			var req dns.Msg
			if err := req.Unpack(msg); err != nil || len(req.Question) != 1 || req.Response {
				return // no answer to garbage
			}
			var resp dns.Msg
			reply(&req, &resp)
			if udp {
				size := dns.MinMsgSize
				if opt := req.IsEdns0(); opt != nil {
					size = int(opt.UDPSize())
				}
				resp.Truncate(size)
			}
			out, err := resp.Pack()
			if err != nil {
				return
			}
			_ = p.Send(out, from)
		}),
	}}
	pr := p2pd.TCP
	if udp {
		pr = p2pd.UDP
	}
	route := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{addr.Addr()}}
	fam := p2pd.IPv4
	if addr.Addr().Is6() {
		fam = p2pd.IPv6
		route.Family = fam
	}
	if _, err := d.ListenAll(ctx, []p2pd.Target{route}, p2pd.Ports{p2pd.Port(addr.Port())}, []p2pd.Proto{pr}, fam); err != nil {
		d.Close()
		return nil, err
	}
	return d.Close, nil
}

// serveMiekg serves with miekg/dns's dns.Server, as its documentation
// shows: a HandlerFunc that writes the reply. MaxTCPQueries is unlimited:
// by default it closes a TCP connection after 128 queries, and dnsperf's
// reconnects then measure that rather than the server.
func serveMiekg(proto string, addr netip.AddrPort) (func() error, error) {
	started := make(chan struct{})
	srv := &dns.Server{
		Addr:              addr.String(),
		Net:               loopback.Network(proto, addr.Addr()),
		MaxTCPQueries:     -1,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
			if len(req.Question) != 1 {
				return
			}
			resp := new(dns.Msg)
			reply(req, resp)
			_ = w.WriteMsg(resp)
		}),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case <-started:
	case err := <-errc:
		return nil, err
	case <-time.After(5 * time.Second):
		return nil, errors.New("dns.Server did not start within 5s")
	}
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return srv.ShutdownContext(ctx)
	}, nil
}
