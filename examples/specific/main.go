// Command specific shows Daemon.ListenSpecific: listeners on routes used
// exactly as bound, here the loopback addresses and the wildcard (every
// address of the machine), over TCP and UDP. It then talks to its own
// loopback listeners (and only to them) and stops. By default the system
// chooses the ports, so a busy port cannot get in the way; with -port the
// loopback listeners take that port and the wildcard the next one. It exits
// with status 1 when a listener cannot be opened (a family the machine
// lacks, such as IPv6 in some containers, is skipped and said once).
//
//	go run ./examples/specific
//	go run ./examples/specific -port 17000
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/p2pd/p2pd"
)

func main() {
	port := flag.Uint("port", 0, "port for the loopback listeners, the wildcard listening on port+1 (1024-65534); 0: the system chooses")
	flag.Parse()
	if *port != 0 && (*port < 1024 || *port > 65534) {
		fmt.Fprintln(os.Stderr, "specific: -port must be 0 or between 1024 and 65534")
		os.Exit(2)
	}
	if err := run(uint16(*port)); err != nil {
		fmt.Fprintln(os.Stderr, "specific:", err)
		os.Exit(1)
	}
}

func run(port uint16) error {
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		p.Send(append([]byte("echo: "), msg...), from)
	})}, // Where a family is missing (no IPv6 loopback in a container, say),
		// keep the listeners that could be opened.
		BestEffort: true,
	}
	defer d.Close()

	var specs []p2pd.Specific
	for _, f := range []p2pd.Family{p2pd.IPv4, p2pd.IPv6} {
		lo, err := p2pd.Route{Family: f}.Bind("localhost", port)
		if err != nil {
			return err
		}
		wild := port
		if port != 0 {
			wild = port + 1
		}
		all, err := p2pd.Route{Family: f}.Bind("*", wild)
		if err != nil {
			return err
		}
		for _, proto := range []p2pd.Proto{p2pd.TCP, p2pd.UDP} {
			specs = append(specs, p2pd.Specific{Route: lo, Proto: proto}, p2pd.Specific{Route: all, Proto: proto})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps, err := d.ListenSpecific(ctx, specs)
	switch {
	case err != nil && (len(ps) == 0 || errors.Is(err, p2pd.ErrAddrInUse)):
		return err // a busy port, say: a failure, reported once (by main)
	case err != nil:
		fmt.Println("skipped:", err) // e.g. no IPv6 loopback in a container
	}
	for _, p := range d.Listeners() {
		fmt.Printf("listening: %v %v\n", p.Proto(), p.LocalAddr())
	}

	// Talk to the loopback listeners only.
	for _, p := range ps {
		if !p.LocalAddr().Addr().IsLoopback() {
			continue
		}
		network := "tcp"
		if p.Proto() == p2pd.UDP {
			network = "udp"
		}
		reply, err := exchange(network, p.LocalAddr().String(), "hello")
		if err != nil {
			return err
		}
		fmt.Printf("%v %v -> %q\n", p.Proto(), p.LocalAddr(), reply)
	}
	return d.Shutdown(ctx)
}

func exchange(network, addr, msg string) (string, error) {
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return string(bytes.TrimSpace(buf[:n])), err
}
