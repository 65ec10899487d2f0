package p2pd

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/p2pd/p2pd/internal/testnet"
)

// TestCloseMatrix calls each of Pipe.Close, Pipe.Shutdown, Daemon.Close
// and Daemon.Shutdown from each of MsgCB, OnUp, OnEnd, OnEvent and another
// goroutine, while other listen calls of the daemon are binding
// ("MsgCB-in-call": the MsgCB of a connection of a listener that a call
// still binding has opened): every
// call returns (a Shutdown from a callback returns when its context ends,
// as documented), the daemon then shuts down completely, and no goroutine
// is left (goleak).
func TestCloseMatrix(t *testing.T) {
	n := testnet.New(t)
	a := n.AddHost("a")
	a.AddDummy(testnet.IfConfig{Name: "lan0", Addrs: []string{"10.81.0.1/24", "10.81.0.2/24"}})
	base := netip.MustParseAddr("10.81.0.1")
	victim := netip.MustParseAddr("10.81.0.2")

	calls := []string{"Pipe.Close", "Pipe.Shutdown", "Daemon.Close", "Daemon.Shutdown"}
	froms := []string{"MsgCB", "MsgCB-in-call", "OnUp", "OnEnd", "OnEvent", "goroutine"}
	for i, call := range calls {
		for j, from := range froms {
			t.Run(call+"/from-"+from, func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
				port := uint16(7300 + 10*i + j)
				a.TryIP("addr", "add", victim.String()+"/24", "dev", "lan0") // back after an OnEvent case
				closeMatrixCase(t, a, base, victim, port, call, from)
			})
		}
	}
}

func closeMatrixCase(t *testing.T, a *testnet.Host, base, victim netip.Addr, port uint16, call, from string) {
	d := &Daemon{PipeConfig: PipeConfig{Logger: quietLogger()}, WatchInterval: 20 * time.Millisecond}
	var once sync.Once
	returned := make(chan error, 1)
	trigger := func(p *Pipe) {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			var err error
			switch call {
			case "Pipe.Close":
				err = p.Close()
			case "Pipe.Shutdown":
				err = p.Shutdown(ctx)
			case "Daemon.Close":
				err = d.Close()
			case "Daemon.Shutdown":
				err = d.Shutdown(ctx)
			}
			returned <- err
		})
	}
	d.OnMsg = MsgCallbackFunc(func(msg []byte, peer Peer, p *Pipe) {
		p.Send(msg, peer)
		if from == "MsgCB" || from == "MsgCB-in-call" {
			trigger(p)
		}
	})
	d.OnUp = func(p *Pipe) {
		if from == "OnUp" {
			trigger(p)
		}
	}
	d.OnEnd = func(p *Pipe, _ error) {
		if from == "OnEnd" && !p.IsServer() {
			trigger(p)
		}
	}
	d.OnEvent = func(e Event) {
		if from == "OnEvent" && e.Kind == EventFailed && e.Pipe != nil {
			trigger(e.Pipe)
		}
	}

	var ls, vs []*Pipe
	var err error
	a.Do(t, func() {
		r := Route{Family: IPv4, Interface: "lan0", NIC: []netip.Addr{base}}
		if ls, err = d.ListenAll(context.Background(), []Target{r}, Ports{Port(port)}, []Proto{TCP, UDP}, IPv4); err != nil {
			return
		}
		rv := Route{Family: IPv4, Interface: "lan0", NIC: []netip.Addr{victim}}
		vs, err = d.ListenAll(context.Background(), []Target{rv}, Ports{Port(port)}, []Proto{TCP}, IPv4)
	})
	if err != nil {
		d.Close()
		t.Fatal(err)
	}

	// Other listen calls keep binding while the call is made.
	var bg sync.WaitGroup
	stopBG := make(chan struct{})
	bg.Go(func() {
		a.Do(t, func() {
			r := Route{Family: IPv4, Interface: "lan0", NIC: []netip.Addr{base}, Bound: netip.AddrPortFrom(base, 0)}
			specs := make([]Specific, 20)
			for k := range specs {
				specs[k] = Specific{Route: r, Proto: UDP}
			}
			if from == "MsgCB-in-call" {
				// A TCP listener first, then many UDP ones: the call is
				// still binding when the TCP listener serves.
				specs = make([]Specific, 200)
				for k := range specs {
					specs[k] = Specific{Route: r, Proto: UDP}
				}
				r1 := r
				r1.Bound = netip.AddrPortFrom(base, port+1000)
				specs[0] = Specific{Route: r1, Proto: TCP}
			}
			for range 200 {
				select {
				case <-stopBG:
					return
				default:
				}
				ps, err := d.ListenSpecific(context.Background(), specs)
				if errors.Is(err, ErrDaemonClosed) {
					return
				}
				for _, p := range ps {
					p.Close()
				}
			}
		})
	})

	var conns []net.Conn
	dial := func() net.Conn {
		var c net.Conn
		a.Do(t, func() {
			var err error
			if c, err = net.DialTimeout("tcp", netip.AddrPortFrom(base, port).String(), waitFor); err != nil {
				t.Error(err)
			}
		})
		if c != nil {
			conns = append(conns, c)
		}
		return c
	}
	switch from {
	case "MsgCB":
		if c := dial(); c != nil {
			c.Write([]byte("x"))
		}
	case "MsgCB-in-call":
		deadline := time.Now().Add(waitFor)
		for time.Now().Before(deadline) {
			var c net.Conn
			a.Do(t, func() { c, _ = net.DialTimeout("tcp", netip.AddrPortFrom(base, port+1000).String(), waitFor) })
			if c != nil {
				conns = append(conns, c)
				c.Write([]byte("x"))
			}
			if len(conns) > 50 {
				break
			}
			select {
			case err := <-returned:
				returned <- err
				deadline = time.Time{}
			case <-time.After(5 * time.Millisecond):
			}
		}
	case "OnUp":
		dial()
	case "OnEnd":
		if c := dial(); c != nil {
			c.Write([]byte("x"))
			buf := make([]byte, 1)
			c.SetReadDeadline(time.Now().Add(waitFor))
			c.Read(buf) // the connection is up and served
			c.Close()
		}
	case "OnEvent":
		a.DelAddr(t, "lan0", victim.String()+"/24")
	case "goroutine":
		go trigger(ls[0])
	}

	select {
	case err := <-returned:
		shutdownCall := call == "Pipe.Shutdown" || call == "Daemon.Shutdown"
		fromCallback := from != "goroutine"
		switch {
		case shutdownCall && fromCallback && !errors.Is(err, context.DeadlineExceeded) && err != nil:
			t.Errorf("%s from %s: %v, want nil or the context's error", call, from, err)
		case !(shutdownCall && fromCallback) && err != nil:
			t.Errorf("%s from %s: %v", call, from, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s from %s did not return: deadlock", call, from)
	}

	close(stopBG)
	for _, c := range conns {
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		t.Fatalf("final Shutdown: %v (something the daemon ran did not end)", err)
	}
	bg.Wait()
	for _, p := range append(ls, vs...) {
		select {
		case <-p.Done():
		default:
			t.Errorf("listener %v not ended after Shutdown", p.LocalAddr())
		}
	}
	if d.Len() != 0 {
		t.Errorf("%d listeners after Shutdown", d.Len())
	}
}
