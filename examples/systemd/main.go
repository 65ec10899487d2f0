// Command systemd is an echo daemon run as a systemd service: it serves the
// sockets systemd passes to it (socket activation: p2pd-echo.socket binds
// them, so the daemon needs no privileges, starts on the first connection
// and can restart without refusing any), and tells systemd when it is ready
// and when it stops (Type=notify). Run outside systemd, it binds its own
// listeners on the loopback address instead.
//
//	go run ./examples/systemd                      # own listeners: 127.0.0.1:7007 TCP and UDP
//	go run ./examples/systemd -ports 9000,9100-9101
//
// Try socket activation without installing anything (systemd-socket-activate
// comes with systemd; it binds the socket, then starts the program with it
// on the first connection):
//
//	go build -o /tmp/p2pd-echo ./examples/systemd
//	systemd-socket-activate -l 127.0.0.1:7007 --fdname=echo-tcp /tmp/p2pd-echo
//	echo hello | nc -q1 127.0.0.1 7007
//
// See docs/systemd.md for the unit files p2pd-echo.socket and
// p2pd-echo.service next to this file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/systemd"
)

func main() {
	ports := flag.String("ports", "7007", "ports (and inclusive ranges) to listen on when systemd passes no sockets")
	flag.Parse()
	if err := run(*ports); err != nil {
		// Under systemd, stderr goes to the journal.
		fmt.Fprintln(os.Stderr, "p2pd-echo:", err)
		systemd.Notify("STATUS=failed: " + err.Error())
		os.Exit(1)
	}
}

func run(portList string) error {
	// systemd stops a service with SIGTERM; Ctrl-C sends SIGINT.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
		if err := p.Send(msg, from); err != nil {
			fmt.Fprintln(os.Stderr, "p2pd-echo: reply to", from, err)
		}
	})},
	}
	defer d.Close()

	how := "activated by systemd"
	_, err := systemd.Listen(ctx, d)
	if errors.Is(err, systemd.ErrNoActivation) {
		// Not socket-activated (or the variables were for another
		// process): listen on our own, on loopback.
		how = "own listeners"
		ports, perr := p2pd.ParsePorts(portList)
		if perr != nil {
			return perr
		}
		loopback := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
		_, err = d.ListenAll(ctx, []p2pd.Target{loopback}, ports, []p2pd.Proto{p2pd.TCP, p2pd.UDP}, p2pd.IPv4)
	}
	if err != nil {
		return err
	}
	fmt.Printf("p2pd-echo: %s, %d listeners\n", how, d.Len())
	for _, l := range d.Listeners() {
		fmt.Printf("  %v %v\n", l.Proto(), l.LocalAddr())
	}

	// Ready: systemd marks the unit active (Type=notify). Outside systemd
	// NOTIFY_SOCKET is unset and Notify does nothing.
	if _, err := systemd.Notify(fmt.Sprintf("%s\nSTATUS=echoing on %d listeners (%s)", systemd.NotifyReady, d.Len(), how)); err != nil {
		fmt.Fprintln(os.Stderr, "p2pd-echo: notify:", err)
	}

	// WatchdogSec= in the unit: ping at half the interval.
	var tick <-chan time.Time
	if wd, err := systemd.WatchdogInterval(); err != nil {
		fmt.Fprintln(os.Stderr, "p2pd-echo: watchdog:", err)
	} else if wd > 0 {
		t := time.NewTicker(wd / 2)
		defer t.Stop()
		tick = t.C
	}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick:
			systemd.Notify(systemd.NotifyWatchdog)
		}
	}

	systemd.Notify(systemd.NotifyStopping)
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	fmt.Println("p2pd-echo: stopped")
	return nil
}
