package p2pd

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// The benchmarks measure receive and dispatch to a MsgCB, ping-pong style
// (the callback signals a channel, the sender waits for it) so no
// datagram is lost. -benchmem's allocs/op counts every goroutine: the
// sender's write and the pipe's read+dispatch.

func BenchmarkUDPDispatch(b *testing.B) {
	got := make(chan struct{}, 1)
	srv := listen(b, UDP, loopRoute(b, IPv4), &PipeConfig{MsgCB: MsgCallbackFunc(func([]byte, netip.AddrPort, *Pipe) { got <- struct{}{} })})
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(srv.LocalAddr()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	lost := time.NewTimer(time.Minute) // one timer: time.After would allocate per op
	defer lost.Stop()
	b.ReportAllocs()
	for b.Loop() {
		c.Write(msg)
		select {
		case <-got:
		case <-lost.C:
			b.Fatal("datagram lost")
		}
	}
}

func BenchmarkTCPDispatch(b *testing.B) {
	for _, f := range []Framing{FrameRaw, FrameLength32} {
		b.Run(f.String(), func(b *testing.B) {
			got := make(chan struct{}, 1)
			srv := listen(b, TCP, loopRoute(b, IPv4), &PipeConfig{Framing: f, MsgCB: MsgCallbackFunc(func([]byte, netip.AddrPort, *Pipe) { got <- struct{}{} })})
			c, err := net.Dial("tcp4", srv.LocalAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg, _ := appendFrame(nil, f, make([]byte, 64), 1<<20)
			lost := time.NewTimer(time.Minute)
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
		})
	}
}
