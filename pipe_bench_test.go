package p2pd

import (
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// The benchmarks measure receive and dispatch to a MsgCB. -benchmem's
// allocs/op counts every goroutine: the sender's writes and the pipe's
// read and dispatch. Each p2pd benchmark has a "stdlib" twin: the same
// traffic read by a goroutine with the net package's allocation-free
// calls, to compare side by side (benchstat, or bench/run's table).

// udpServer starts either a p2pd UDP pipe or a stdlib read loop calling
// cb, and returns the address and a stop function.
func udpServer(b *testing.B, impl string, cb func()) (netip.AddrPort, func()) {
	if impl == "p2pd" {
		srv := listen(b, UDP, loopRoute(b, IPv4), &PipeConfig{OnMsg: MsgCallbackFunc(func([]byte, Peer, *Pipe) { cb() })})
		return srv.LocalAddr(), func() { srv.Close() }
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, DefaultUDPBufferSize)
		for {
			if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			cb()
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), func() { c.Close(); <-done }
}

// BenchmarkUDPDispatch: one datagram at a time, ping-pong (the callback
// signals, the sender waits), so none is lost.
func BenchmarkUDPDispatch(b *testing.B) {
	for _, impl := range []string{"p2pd", "stdlib"} {
		b.Run(impl, func(b *testing.B) {
			got := make(chan struct{}, 1)
			addr, stop := udpServer(b, impl, func() { got <- struct{}{} })
			defer stop()
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addr))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			pingPong(b, c, make([]byte, 64), got)
		})
	}
}

// BenchmarkUDPBurst: bursts of 32 datagrams, the next burst sent when the
// callback has seen the whole previous one; one op is one datagram. This
// is where batched reads pay.
func BenchmarkUDPBurst(b *testing.B) {
	const burst = 32
	for _, impl := range []string{"p2pd", "stdlib"} {
		b.Run(impl, func(b *testing.B) {
			var n atomic.Int64
			var want atomic.Int64
			got := make(chan struct{}, 1)
			addr, stop := udpServer(b, impl, func() {
				if n.Add(1) == want.Load() {
					got <- struct{}{}
				}
			})
			defer stop()
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addr))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 64)
			lost := time.NewTimer(time.Minute)
			defer lost.Stop()
			b.ReportAllocs()
			sent := 0
			for b.Loop() {
				c.Write(msg)
				if sent++; sent%burst == 0 {
					want.Store(int64(sent))
					if n.Load() < int64(sent) {
						select {
						case <-got:
						case <-lost.C:
							b.Fatalf("datagrams lost: %d of %d seen", n.Load(), sent)
						}
					}
				}
			}
		})
	}
}

func BenchmarkTCPDispatch(b *testing.B) {
	for _, f := range []Framing{FrameRaw, FrameLength32} {
		b.Run(f.String(), func(b *testing.B) {
			got := make(chan struct{}, 1)
			srv := listen(b, TCP, loopRoute(b, IPv4), &PipeConfig{Framing: f, OnMsg: MsgCallbackFunc(func([]byte, Peer, *Pipe) { got <- struct{}{} })})
			c, err := net.Dial("tcp4", srv.LocalAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg, _ := appendFrame(nil, f, make([]byte, 64), 1<<20)
			pingPong(b, c, msg, got)
		})
	}
	b.Run("stdlib", func(b *testing.B) {
		got := make(chan struct{}, 1)
		c := stdlibTCP(b, func(s net.Conn, msg []byte) error { got <- struct{}{}; return nil })
		pingPong(b, c, make([]byte, 64), got)
	})
}

// stdlibTCP serves one connection with a stdlib read loop that hands each
// read to handle, until a read or handle fails; it returns the client's
// end. The test's cleanup closes both and waits for the loop.
func stdlibTCP(b *testing.B, handle func(s net.Conn, msg []byte) error) net.Conn {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		buf := make([]byte, DefaultTCPBufferSize)
		for {
			n, err := s.Read(buf)
			if err != nil || handle(s, buf[:n]) != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-done
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); ln.Close(); <-done })
	return c
}

// pingPong writes msg on c and waits for the receiver to signal got, b.N
// times, so nothing is lost and every op is one message received.
func pingPong(b *testing.B, c net.Conn, msg []byte, got <-chan struct{}) {
	lost := time.NewTimer(time.Minute) // one timer: time.After would allocate per op
	defer lost.Stop()
	b.ReportAllocs()
	for b.Loop() {
		c.Write(msg)
		select {
		case <-got:
		case <-lost.C:
			b.Fatal("message lost")
		}
	}
}

// BenchmarkTCPEcho: one 64-byte request at a time on one connection, the
// server's MsgCB sending it back (read, dispatch, Send with its deadline),
// against a stdlib Read/Write loop. An op is one round trip.
func BenchmarkTCPEcho(b *testing.B) {
	msg := make([]byte, 64)
	b.Run("raw", func(b *testing.B) {
		srv := listen(b, TCP, loopRoute(b, IPv4), &PipeConfig{OnMsg: MsgCallbackFunc(func(m []byte, from Peer, p *Pipe) { p.Send(m, from) })})
		c, err := net.Dial("tcp4", srv.LocalAddr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		roundTrips(b, c, msg)
	})
	b.Run("stdlib", func(b *testing.B) {
		c := stdlibTCP(b, func(s net.Conn, m []byte) error { _, err := s.Write(m); return err })
		roundTrips(b, c, msg)
	})
}

// roundTrips writes msg on c and reads the whole echo back, b.N times.
func roundTrips(b *testing.B, c net.Conn, msg []byte) {
	buf := make([]byte, len(msg))
	c.SetDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}
