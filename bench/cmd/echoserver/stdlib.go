package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// startStdlib serves echo the idiomatic net-package way: for TCP a
// goroutine per connection with a Read/Write loop on a 32 KiB buffer, for
// UDP one goroutine reading and writing one datagram at a time.
func startStdlib(ctx context.Context, proto string, addr netip.AddrPort) (func() error, error) {
	if proto == "udp" {
		return startStdlibUDP(ctx, addr)
	}
	return startStdlibTCP(ctx, addr)
}

func startStdlibTCP(ctx context.Context, addr netip.AddrPort) (func() error, error) {
	ln, err := net.ListenTCP(loopback.Network("tcp", addr.Addr()), net.TCPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed on shutdown
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						work() // per Read: TCP has no messages
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	return func() error {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		return nil
	}, nil
}

func startStdlibUDP(ctx context.Context, addr netip.AddrPort) (func() error, error) {
	c, err := net.ListenUDP(loopback.Network("udp", addr.Addr()), net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ECONNREFUSED from an earlier reply's ICMP
			}
			work()
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	return func() error {
		<-ctx.Done()
		c.Close()
		wg.Wait()
		return nil
	}, nil
}
