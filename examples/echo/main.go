// Command echo is an echo daemon: every TCP message and UDP datagram it
// receives is sent back to its sender. It listens on the default interface
// and on the loopback one (so that a client on the same machine can try
// it), on a port and a small range, over TCP and UDP, in every family the
// interfaces serve, IPv6 on both the global and the link-local address.
//
//	go run ./examples/echo                 # serve until Ctrl-C (SIGINT) or SIGTERM
//	echo hello | socat -t1 - TCP:127.0.0.1:7007   # from another shell: prints hello
//	go run ./examples/echo -for 2s         # serve for 2 seconds, then stop
//	go run ./examples/echo -ports 9000,9100-9101 -iface eth0
//
// It needs no privileges: the default ports are above 1024.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/p2pd/p2pd"
)

func main() {
	ports := flag.String("ports", "7007,7100-7102", "ports and inclusive ranges to listen on")
	iface := flag.String("iface", "", "interface to serve (default: the default route's, else loopback)")
	serveFor := flag.Duration("for", 0, "stop after this long (0: serve until SIGINT or SIGTERM)")
	flag.Parse()
	if err := run(*iface, *ports, *serveFor); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

// echoDaemon is a Daemon that answers every message with itself.
type echoDaemon struct{ p2pd.Daemon }

func (d *echoDaemon) MsgCB(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
	// Send writes before it returns, so msg needs no copy.
	if err := p.Send(msg, from); err != nil {
		fmt.Fprintln(os.Stderr, "echo: reply to", from, err)
	}
}

func run(ifname, portList string, serveFor time.Duration) error {
	ps, err := p2pd.ParsePorts(portList)
	if err != nil {
		return err
	}
	targets, err := pickTargets(ifname)
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

	d := new(echoDaemon)
	d.OnMsg = d // P2PD's "subclass Daemon and define msg_cb"
	defer d.Close()
	listeners, err := d.ListenAll(ctx, targets, ps, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
	if err != nil {
		return err
	}
	fmt.Printf("echo: %d listeners\n", len(listeners))
	for _, l := range d.Listeners() {
		fmt.Printf("  %v %v\n", l.Proto(), l.LocalAddr())
	}
	if serveFor > 0 {
		fmt.Printf("echo: serving for %v\n", serveFor)
	} else {
		fmt.Println("echo: serving until SIGINT or SIGTERM")
	}

	<-ctx.Done()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	fmt.Println("echo: stopped")
	return nil
}

// pickTargets returns the named interface, else the default one and the
// loopback one (either may be missing, not both), else a loopback route.
func pickTargets(ifname string) ([]p2pd.Target, error) {
	if ifname != "" {
		ifc, err := p2pd.InterfaceByName(ifname)
		if err != nil {
			return nil, err
		}
		return []p2pd.Target{ifc}, nil
	}
	var targets []p2pd.Target
	def, err := p2pd.DefaultInterface(p2pd.AnyFamily)
	switch {
	case err != nil:
		fmt.Printf("echo: no default interface (%v): loopback only\n", err)
	case len(def.Supported()) > 0 && def.Flags&net.FlagLoopback == 0:
		fmt.Printf("echo: default interface %s, and loopback\n", def.Name)
		targets = append(targets, def)
	}
	if list, err := p2pd.Interfaces(); err == nil {
		for i := range list {
			if list[i].Flags&net.FlagLoopback != 0 && len(list[i].Supported()) > 0 {
				return append(targets, &list[i]), nil
			}
		}
	}
	if len(targets) > 0 {
		return targets, nil
	}
	fmt.Println("echo: no loopback interface found: using 127.0.0.1")
	return []p2pd.Target{p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}}, nil
}
