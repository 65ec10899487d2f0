// Command stunserver is a STUN Binding server (RFC 8489) on a p2pd
// Daemon: every Binding request gets the address it came from as
// XOR-MAPPED-ADDRESS, over UDP on every address of an interface.
// github.com/pion/stun/v3 is the codec.
//
//	go run ./stunserver -iface lo
//	turnutils_stunclient 127.0.0.1      # from coturn: prints the mapped address
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/pion/stun/v3"
)

func main() {
	iface := flag.String("iface", "lo", "interface to serve")
	port := flag.Uint("port", 3478, "UDP port")
	serveFor := flag.Duration("for", 0, "stop after this long (0: until SIGINT or SIGTERM)")
	flag.Parse()
	if err := run(*iface, uint16(*port), *serveFor); err != nil {
		fmt.Fprintln(os.Stderr, "stunserver:", err)
		os.Exit(1)
	}
}

// reply answers one datagram: a Binding success with the sender's address,
// or nothing for anything else.
func reply(msg []byte, from p2pd.Peer) ([]byte, bool) {
	if !stun.IsMessage(msg) {
		return nil, false
	}
	var req stun.Message
	if err := stun.Decode(append([]byte(nil), msg...), &req); err != nil || req.Type != stun.BindingRequest {
		return nil, false
	}
	a := from.Addr().Unmap().WithZone("")
	resp, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: a.AsSlice(), Port: int(from.Port())},
		stun.NewSoftware("p2pd stunserver"), stun.Fingerprint)
	if err != nil {
		return nil, false
	}
	return resp.Raw, true
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
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		if out, ok := reply(msg, from); ok {
			p.Send(out, from)
		}
	})}}
	defer d.Close()
	if _, err := d.ListenAll(ctx, []p2pd.Target{ifc}, p2pd.Ports{p2pd.Port(port)}, []p2pd.Proto{p2pd.UDP}, p2pd.AnyFamily); err != nil {
		return err
	}
	for _, l := range d.Listeners() {
		fmt.Printf("stunserver: %v %v\n", l.Proto(), l.LocalAddr())
	}
	fmt.Println("stunserver: serving")
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.Shutdown(sctx)
}
