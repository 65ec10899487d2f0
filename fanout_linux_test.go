package p2pd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// Fan-out (PipeConfig.Sockets): several SO_REUSEPORT sockets per listener,
// served on loopback. A message's socket is read from its Peer (Peer.sock).

// fanEcho echoes, records for every peer the sockets its datagrams came in
// on, and, until release is closed, blocks the first callback of every
// socket, so that the datagrams behind it queue in that socket and its
// next read is a batch.
type fanEcho struct {
	release chan struct{}
	mu      sync.Mutex
	socks   map[netip.AddrPort]map[uint16]int
	blocked map[uint16]bool
	wrong   int // Sends that socketOf would not have made from the peer's socket
}

func newFanEcho() *fanEcho {
	return &fanEcho{release: make(chan struct{}), socks: map[netip.AddrPort]map[uint16]int{}, blocked: map[uint16]bool{}}
}

func (e *fanEcho) MsgCB(msg []byte, from Peer, p *Pipe) {
	e.mu.Lock()
	if e.socks[from.AddrPort] == nil {
		e.socks[from.AddrPort] = map[uint16]int{}
	}
	e.socks[from.AddrPort][from.sock]++
	first := !e.blocked[from.sock]
	e.blocked[from.sock] = true
	if c, u := p.socketOf(from); c != p.fan.socks[from.sock].udp || u != p.fan.socks[from.sock].ub {
		e.wrong++
	}
	e.mu.Unlock()
	if first {
		<-e.release
	}
	p.Send(msg, from)
}

func fanAddr(t *testing.T, f Family) netip.AddrPort {
	t.Helper()
	return loopRoute(t, f).Bound
}

// Every peer's datagrams reach one socket, more than one socket serves,
// every reply comes back (from the address the peer wrote to), and each
// reply joins the batch of the socket its datagram came in on.
func TestFanoutUDP(t *testing.T) {
	for _, tc := range []struct {
		f     Family
		bound string
		n     int
	}{{IPv4, "localhost", 4}, {IPv6, "localhost", 2}, {IPv4, "*", 3}} {
		t.Run(fmt.Sprintf("%v-%s-%d", tc.f, tc.bound, tc.n), func(t *testing.T) {
			to := fanAddr(t, tc.f)
			r, err := Route{Family: tc.f}.Bind(tc.bound, 0)
			if err != nil {
				t.Fatal(err)
			}
			e := newFanEcho()
			srv := listen(t, UDP, r, &PipeConfig{OnMsg: e, Sockets: tc.n})
			if srv.fan == nil || len(srv.fan.socks) != tc.n {
				t.Fatalf("want %d sockets, have %+v", tc.n, srv.fan)
			}
			to = netip.AddrPortFrom(to.Addr(), srv.LocalAddr().Port())
			const clients, each = 16, 8
			conns := make([]*net.UDPConn, clients)
			for i := range conns {
				c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
				for j := range each {
					if _, err := c.Write(fmt.Appendf(nil, "%d-%d", i, j)); err != nil {
						t.Fatal(err)
					}
				}
			}
			close(e.release)
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i, c := range conns {
				wg.Go(func() {
					got := map[string]bool{}
					buf := make([]byte, 64)
					c.SetReadDeadline(time.Now().Add(waitFor))
					for len(got) < each {
						n, err := c.Read(buf)
						if err != nil {
							errs <- fmt.Errorf("client %d: %d of %d replies: %w", i, len(got), each, err)
							return
						}
						got[string(buf[:n])] = true
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err, srv.Stats())
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			used := map[uint16]bool{}
			for peer, m := range e.socks {
				if len(m) != 1 {
					t.Errorf("peer %v on several sockets: %v", peer, m)
				}
				for k, n := range m {
					used[k] = true
					if n != each {
						t.Errorf("peer %v: %d datagrams, want %d", peer, n, each)
					}
				}
			}
			if len(e.socks) != clients || len(used) < 2 || e.wrong != 0 {
				t.Errorf("%d peers on sockets %v (want %d peers on more than one socket); %d replies from another socket", len(e.socks), used, clients, e.wrong)
			}
			for i := range srv.fan.socks {
				u := srv.fan.socks[i].ub
				b, q := u.batches.Load(), u.queued.Load()
				t.Logf("socket %d: %d batches, %d replies queued", i, b, q)
				if used[uint16(i)] && (b == 0 || q < 2*b) {
					t.Errorf("socket %d: %d batches, %d replies queued in them: the replies did not join its batches", i, b, q)
				}
			}
		})
	}
}

// TCP: the connections are accepted on more than one socket, into one
// server (its counters and table).
func TestFanoutTCP(t *testing.T) {
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{OnMsg: echoCB, Sockets: 4})
	const conns = 48
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", srv.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs[i] = c
	}
	for i, c := range cs {
		msg := fmt.Sprintf("hello %d", i)
		c.SetDeadline(time.Now().Add(waitFor))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != msg {
			t.Fatalf("conn %d: %q, %v", i, buf[:n], err)
		}
	}
	var total uint64
	served := 0
	for i := range srv.fan.socks {
		n := srv.fan.socks[i].accepts.Load()
		t.Logf("socket %d accepted %d", i, n)
		total += n
		if n > 0 {
			served++
		}
	}
	if st := srv.Stats(); total != conns || served < 2 || st.Accepted != conns || st.Conns != conns || len(srv.Clients()) != conns {
		t.Fatalf("%d accepts on %d sockets, stats %+v, %d clients; want %d on more than one", total, served, st, len(srv.Clients()), conns)
	}
}

// Close and Shutdown, from outside or from a callback, while every socket
// has traffic: every socket and goroutine ends.
func TestFanoutCloseUnderTraffic(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, proto := range []Proto{UDP, TCP} {
		for _, how := range []string{"Close", "Shutdown", "Close from a callback"} {
			t.Run(proto.String()+"/"+how, func(t *testing.T) {
				var got atomic.Int64
				cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
					if got.Add(1) == 200 && how == "Close from a callback" {
						if p.Parent() != nil {
							p = p.Parent() // a TCP connection's server
						}
						p.Close()
					}
					p.Send(msg, from)
				})
				srv, err := Listen(context.Background(), proto, loopRoute(t, IPv4), &PipeConfig{OnMsg: cb, Sockets: 4})
				if err != nil {
					t.Fatal(err)
				}
				stop := make(chan struct{})
				var wg sync.WaitGroup
				for range 8 {
					wg.Go(func() { fanTraffic(proto, srv.LocalAddr(), stop) })
				}
				waitUntil(t, func() bool { return got.Load() >= 200 }, "traffic")
				switch how {
				case "Close":
					srv.Close()
				case "Shutdown":
					ctx, cancel := context.WithTimeout(context.Background(), waitFor)
					defer cancel()
					if err := srv.Shutdown(ctx); err != nil {
						t.Error(err)
					}
				}
				waitDone(t, srv)
				close(stop)
				wg.Wait()
				if err := srv.Err(); err != nil {
					t.Error(err)
				}
				for i := range srv.fan.socks {
					if s := &srv.fan.socks[i]; fanOpen(s) {
						t.Errorf("socket %d still open", i)
					}
				}
			})
		}
	}
}

// fanOpen reports whether a socket of a fan-out is still open.
func fanOpen(s *fanSock) bool {
	var c syscall.Conn = s.udp
	if s.ln != nil {
		c = s.ln.(*net.TCPListener)
	}
	rc, err := c.SyscallConn()
	return err == nil && rc.Control(func(uintptr) {}) == nil
}

// fanTraffic exchanges messages with addr until stop or an error, with new
// source ports now and then, so that every socket gets some.
func fanTraffic(proto Proto, addr netip.AddrPort, stop <-chan struct{}) {
	buf := make([]byte, 64)
	for {
		c, err := net.Dial(proto.network(IPv4), addr.String())
		if err != nil {
			return
		}
		for range 50 {
			select {
			case <-stop:
				c.Close()
				return
			default:
			}
			c.SetDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Write([]byte("ping")); err != nil {
				break
			}
			if _, err := c.Read(buf); err != nil && proto == TCP {
				break
			}
		}
		c.Close()
	}
}

// Shutdown lets the callbacks of every socket finish, and their replies
// leave, before any socket closes.
func TestFanoutShutdownWaitsForEverySocket(t *testing.T) {
	entered, release := make(chan Peer, 1), make(chan struct{})
	sent := make(chan error, 1)
	var once sync.Once
	cb := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		if from.sock == 0 {
			p.Send(msg, from)
			return
		}
		once.Do(func() {
			entered <- from
			<-release
			sent <- p.Send([]byte("late"), from)
		})
	})
	srv := listen(t, UDP, loopRoute(t, IPv4), &PipeConfig{OnMsg: cb, Sockets: 4})
	var peer *net.UDPConn
	var late chan string // what peer reads
	for i := 0; i < 64 && peer == nil; i++ {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(srv.LocalAddr()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		read := make(chan string, 1)
		go func() {
			buf := make([]byte, 8)
			c.SetReadDeadline(time.Now().Add(2 * waitFor))
			n, err := c.Read(buf)
			if err != nil {
				read <- err.Error()
			}
			read <- string(buf[:n])
		}()
		select {
		case <-entered: // on another socket than the first, whose callback now blocks
			peer, late = c, read
		case m := <-read: // on the first socket: echoed
			if m != "hi" {
				t.Fatal(m)
			}
		}
	}
	if peer == nil {
		t.Fatal("no client landed on another socket than the first")
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	go func() { done <- srv.Shutdown(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a callback runs", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-sent; err != nil {
		t.Fatalf("Send from the callback during Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := <-late; m != "late" {
		t.Fatalf("late reply: %q", m)
	}
}

// reusePort reads SO_REUSEPORT of a socket.
func reusePort(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT) })
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}

// Out of range values are refused; zero, 1 and negative values bind as
// documented, and SO_REUSEPORT is set only on the sockets of a fan-out.
func TestFanoutSockets(t *testing.T) {
	for _, n := range []int{maxSockets + 1, 1000, math.MaxInt} {
		_, err := Listen(context.Background(), UDP, loopRoute(t, IPv4), &PipeConfig{Sockets: n})
		var be *BindError
		if !errors.As(err, &be) || !errors.Is(err, ErrInvalid) {
			t.Errorf("Listen, Sockets %d: %v", n, err)
		}
		if _, err := Dial(context.Background(), UDP, Route{}, "127.0.0.1", 9, &PipeConfig{Sockets: n}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Dial, Sockets %d: %v", n, err)
		}
		d := &Daemon{PipeConfig: PipeConfig{Sockets: n}}
		if _, err := d.ListenSpecific(context.Background(), []Specific{{Route: loopRoute(t, IPv4), Proto: TCP}}); !errors.Is(err, ErrInvalid) || d.Len() != 0 {
			t.Errorf("ListenSpecific, Sockets %d: %v", n, err)
		}
		d.Close()
	}
	for _, tc := range []struct{ sockets, want int }{{0, 1}, {1, 1}, {-1, min(maxSockets, runtime.GOMAXPROCS(0))}, {2, 2}, {maxSockets, maxSockets}} {
		for _, proto := range []Proto{TCP, UDP} {
			p := listen(t, proto, loopRoute(t, IPv4), &PipeConfig{Sockets: tc.sockets})
			have, reuse := 1, 0
			if p.fan != nil {
				have = len(p.fan.socks)
			}
			if proto == TCP {
				reuse = reusePort(t, p.ln.(*net.TCPListener))
			} else {
				reuse = reusePort(t, p.udp)
			}
			if have != tc.want || (reuse == 1) != (tc.want > 1) {
				t.Errorf("%v, Sockets %d: %d sockets, SO_REUSEPORT %d; want %d", proto, tc.sockets, have, reuse, tc.want)
			}
			p.Close()
			waitDone(t, p)
		}
	}
}
