// Command reachable is an echo daemon that makes itself reachable from
// outside: it listens on the default interface (IPv4, TCP and UDP), asks
// the home router to map its ports (PCP, NAT-PMP or UPnP IGD, whichever
// the router speaks), learns each UDP listener's own NAT mapping from STUN
// servers when given some, and prints every endpoint as the world can
// reach it, with where that came from. On exit it deletes its mappings.
//
//	go run ./examples/reachable                          # map port 7007, until Ctrl-C
//	go run ./examples/reachable -stun stun1.example.net,stun2.example.net
//	go run ./examples/reachable -ports 9000-9001 -for 10s
//
// It contacts only the default gateway and the STUN servers it is given.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/reach"
	"github.com/p2pd/p2pd/stun"
)

func main() {
	ports := flag.String("ports", "7007", "ports and inclusive ranges to listen on")
	servers := flag.String("stun", "", "comma-separated STUN servers for the UDP listeners (none by default)")
	serveFor := flag.Duration("for", 0, "stop after this long (0: until SIGINT or SIGTERM)")
	flag.Parse()
	if err := run(*ports, *servers, *serveFor); err != nil {
		fmt.Fprintln(os.Stderr, "reachable:", err)
		os.Exit(1)
	}
}

func run(portList, servers string, serveFor time.Duration) error {
	ps, err := p2pd.ParsePorts(portList)
	if err != nil {
		return err
	}
	ifc, err := p2pd.DefaultInterface(p2pd.IPv4)
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
		p.Send(msg, from) // echo
	})}}
	defer d.Close()
	if _, err := d.ListenAll(ctx, []p2pd.Target{ifc}, ps, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.IPv4); err != nil {
		return err
	}

	// Start reports the first round itself (Endpoints below); OnChange
	// reports what changes later.
	var started atomic.Bool
	cfg := reach.Config{OnChange: func(e reach.Endpoint) {
		if started.Load() {
			fmt.Println("changed:", e)
		}
	}}
	if servers != "" {
		cfg.STUN = &stun.Resolver{Servers: strings.Split(servers, ",")}
	}
	m, err := reach.Start(ctx, d, cfg)
	if err != nil {
		return err
	}
	started.Store(true)
	for _, e := range m.Endpoints() {
		fmt.Println(e)
	}
	<-ctx.Done()

	// Delete the mappings before leaving: the router forgets them anyway
	// when their lease ends.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Shutdown(sctx); err != nil {
		return err
	}
	return d.Shutdown(sctx)
}
