package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// Batch sizes of the batch server: up to batchLen datagrams per recvmmsg,
// each in a buffer that holds the largest UDP payload, so no datagram is
// truncated whatever -size the load uses (64 × 64 KiB = 4 MiB, allocated
// once).
const (
	batchLen = 64
	batchBuf = 64 << 10
)

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share: recvmmsg and
// sendmmsg on Linux (one message per call elsewhere).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// startBatch is the strong UDP baseline: one goroutine that reads up to 64
// datagrams with one recvmmsg and sends all their replies with as few
// sendmmsg calls as the kernel allows (usually one).
func startBatch(ctx context.Context, proto string, addr netip.AddrPort) (func() error, error) {
	if proto != "udp" {
		return nil, fmt.Errorf("the batch server is UDP only")
	}
	c, err := net.ListenUDP(loopback.Network("udp", addr.Addr()), net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	var bc batchConn = ipv4.NewPacketConn(c)
	if addr.Addr().Is6() {
		bc = ipv6.NewPacketConn(c)
	}
	var wg sync.WaitGroup
	wg.Go(func() { serveBatch(bc) })
	return func() error {
		<-ctx.Done()
		c.Close()
		wg.Wait()
		return nil
	}, nil
}

func serveBatch(bc batchConn) {
	in := make([]ipv4.Message, batchLen)
	out := make([]ipv4.Message, batchLen)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, batchBuf)}
		out[i].Buffers = make([][]byte, 1)
	}
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ECONNREFUSED left by an earlier reply's ICMP
		}
		for i := range n {
			work()
			out[i].Buffers[0] = in[i].Buffers[0][:in[i].N]
			out[i].Addr = in[i].Addr
		}
		// sendmmsg may send fewer than asked; loop on the rest. A message it
		// refuses outright (n == 0 with an error) is dropped, as a failed
		// WriteTo would be, so the loop always advances.
		for off := 0; off < n; {
			k, err := bc.WriteBatch(out[off:n], 0)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if k <= 0 {
				k = 1
			}
			off += k
		}
	}
}
