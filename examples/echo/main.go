// Command echo is an echo daemon: every TCP message and UDP datagram it
// receives is sent back to its sender. It listens on the default
// interface (or the loopback one when the machine has no default route), on
// a port and a small range, over TCP and UDP, in every family the interface
// serves, IPv6 on both the global and the link-local address.
//
//	go run ./examples/echo                 # serve until Ctrl-C (SIGINT) or SIGTERM
//	go run ./examples/echo -for 2s         # serve for 2 seconds, then stop
//	go run ./examples/echo -ports 9000,9100-9101 -iface eth0
//
// It needs no privileges: the default ports are above 1024.
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
	target, err := pickTarget(ifname)
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
	listeners, err := d.ListenAll(ctx, []p2pd.Target{target}, ps, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.AnyFamily)
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

// pickTarget returns the named interface, else the default one, else the
// loopback interface, else a loopback route.
func pickTarget(ifname string) (p2pd.Target, error) {
	if ifname != "" {
		return p2pd.InterfaceByName(ifname)
	}
	if ifc, err := p2pd.DefaultInterface(p2pd.AnyFamily); err == nil && len(ifc.Supported()) > 0 {
		fmt.Printf("echo: default interface %s\n", ifc.Name)
		return ifc, nil
	} else if err != nil {
		fmt.Printf("echo: no default interface (%v): using the loopback\n", err)
	}
	list, err := p2pd.Interfaces()
	if err == nil {
		for i := range list {
			if list[i].Flags&net.FlagLoopback != 0 && len(list[i].Supported()) > 0 {
				return &list[i], nil
			}
		}
	}
	if err == nil {
		err = errors.New("no loopback interface found")
	}
	fmt.Printf("echo: %v: using 127.0.0.1\n", err)
	return p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, nil
}
