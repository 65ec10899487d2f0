package main

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"os"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// gnetEcho is gnet's canonical echo handler: take everything read, write it
// back.
type gnetEcho struct {
	gnet.BuiltinEventEngine
	booted chan gnet.Engine
}

func (e *gnetEcho) OnBoot(eng gnet.Engine) gnet.Action {
	e.booted <- eng
	return gnet.None
}

func (e *gnetEcho) OnTraffic(c gnet.Conn) gnet.Action {
	buf, _ := c.Next(-1)
	work()
	c.Write(buf)
	return gnet.None
}

// startGnet serves echo with gnet's idiomatic options: multicore (one event
// loop per CPU). For UDP gnet always sets SO_REUSEPORT (createListeners in
// gnet.go: "If there is UDP address in the list, we have no choice but to
// enable SO_REUSEPORT") and, with ReusePort, binds one UDP socket per event
// loop (engine.runEventLoops), so the kernel spreads the client sockets
// over 2 sockets on this 2-CPU machine by 4-tuple hash; each event loop then
// does one recvfrom and one sendto per datagram (no batching). For TCP it
// runs one acceptor and a sub-reactor per CPU.
func startGnet(ctx context.Context, proto string, addr netip.AddrPort) (func() error, error) {
	h := &gnetEcho{booted: make(chan gnet.Engine, 1)}
	runErr := make(chan error, 1)
	go func() {
		runErr <- gnet.Run(h, proto+"://"+addr.String(),
			gnet.WithMulticore(true),
			gnet.WithLogger(stderrLogger{log.New(os.Stderr, "gnet: ", 0)}))
	}()
	var eng gnet.Engine
	select {
	case eng = <-h.booted:
	case err := <-runErr:
		return nil, err
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("gnet did not boot within 5s")
	}
	return func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := eng.Stop(sctx); err != nil {
			return err
		}
		return <-runErr
	}, nil
}

// stderrLogger keeps gnet's logs off stdout (its default logger writes to
// stdout, which carries the "ready" line) and drops its debug and info
// lines.
type stderrLogger struct{ l *log.Logger }

func (s stderrLogger) Debugf(string, ...any)     {}
func (s stderrLogger) Infof(string, ...any)      {}
func (s stderrLogger) Warnf(f string, a ...any)  { s.l.Printf("warn: "+f, a...) }
func (s stderrLogger) Errorf(f string, a ...any) { s.l.Printf("error: "+f, a...) }
func (s stderrLogger) Fatalf(f string, a ...any) { s.l.Fatalf("fatal: "+f, a...) }
