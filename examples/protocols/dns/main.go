// Command dns is a small authoritative DNS responder on a p2pd Daemon: it
// listens on an interface (every address: IPv4, IPv6 global and link-local)
// over UDP and TCP (FrameLength16: DNS over TCP's 2-byte length prefix),
// and answers for one zone. github.com/miekg/dns is the codec.
//
//	go run ./dns -iface lo -port 5353
//	dig @127.0.0.1 -p 5353 hello.p2pd.test A      # 192.0.2.1
//	dig @127.0.0.1 -p 5353 whoami.p2pd.test TXT   # the address the query came from
//	dig @127.0.0.1 -p 5353 +tcp hello.p2pd.test AAAA
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/p2pd/p2pd"
)

func main() {
	iface := flag.String("iface", "lo", "interface to serve")
	port := flag.Uint("port", 5353, "port (53 needs privileges)")
	serveFor := flag.Duration("for", 0, "stop after this long (0: until SIGINT or SIGTERM)")
	flag.Parse()
	if err := run(*iface, uint16(*port), *serveFor); err != nil {
		fmt.Fprintln(os.Stderr, "dns:", err)
		os.Exit(1)
	}
}

// zone is what the responder knows.
const zone = "p2pd.test."

var records = map[string][]dns.RR{
	"hello." + zone: {
		&dns.A{Hdr: dns.RR_Header{Name: "hello." + zone, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)},
		&dns.AAAA{Hdr: dns.RR_Header{Name: "hello." + zone, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: net.ParseIP("2001:db8::1")},
	},
}

// answer builds the reply to one query, from the peer it came from.
func answer(q []byte, from p2pd.Peer, udp bool) ([]byte, error) {
	var req dns.Msg
	if err := req.Unpack(q); err != nil || len(req.Question) != 1 || req.Response {
		return nil, fmt.Errorf("not a query: %v", err) // no answer to garbage
	}
	resp := new(dns.Msg)
	resp.SetReply(&req)
	resp.Authoritative = true
	question := req.Question[0]
	name := dns.CanonicalName(question.Name)
	switch {
	case name == "whoami."+zone && question.Qtype == dns.TypeTXT:
		resp.Answer = append(resp.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
			Txt: []string{from.Addr().String()}})
	case !dns.IsSubDomain(zone, name):
		resp.Rcode = dns.RcodeRefused // not ours: no recursion here
	default:
		found := false
		for _, rr := range records[name] {
			found = true
			if rr.Header().Rrtype == question.Qtype {
				resp.Answer = append(resp.Answer, rr)
			}
		}
		if !found {
			resp.Rcode = dns.RcodeNameError
		}
	}
	if udp {
		max := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			max = int(opt.UDPSize())
		}
		resp.Truncate(max) // the client retries over TCP
	}
	return resp.Pack()
}

func run(ifname string, port uint16, serveFor time.Duration) error {
	ifc, err := p2pd.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if serveFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, serveFor)
		defer cancel()
	}
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{
		Framing: p2pd.FrameLength16, // TCP only: UDP has datagrams
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
			out, err := answer(msg, from, p.Proto() == p2pd.UDP)
			if err != nil {
				return
			}
			p.Send(out, from)
		}),
	}}
	defer d.Close()
	if _, err := d.ListenAll(ctx, []p2pd.Target{ifc}, p2pd.Ports{p2pd.Port(port)}, []p2pd.Proto{p2pd.UDP, p2pd.TCP}, p2pd.AnyFamily); err != nil {
		return err
	}
	for _, l := range d.Listeners() {
		fmt.Printf("dns: %v %v\n", l.Proto(), l.LocalAddr())
	}
	fmt.Println("dns: serving")
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.Shutdown(sctx)
}
