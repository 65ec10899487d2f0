package main

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// server is an echo server that counts its connections.
type server interface {
	addr() netip.AddrPort
	conns() int
	close()
}

type p2pdServer struct {
	d  *p2pd.Daemon
	ap netip.AddrPort
}

// startP2PD serves echo with a Daemon and the default PipeConfig, except
// MaxConns: its default (16384) is below the largest N, and a connection
// over it would evict a silent one.
func startP2PD(n int) (server, error) {
	port, err := loopback.FreePort(loopbackAddr)
	if err != nil {
		return nil, err
	}
	d := &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
			_ = p.Send(msg, from)
		}),
		MaxConns: max(p2pd.DefaultMaxConns, n+64),
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	route := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{loopbackAddr}}
	if _, err := d.ListenAll(ctx, []p2pd.Target{route}, p2pd.Ports{p2pd.Port(port)}, []p2pd.Proto{p2pd.TCP}, p2pd.IPv4); err != nil {
		d.Close()
		return nil, err
	}
	return &p2pdServer{d: d, ap: netip.AddrPortFrom(loopbackAddr, port)}, nil
}

func (s *p2pdServer) addr() netip.AddrPort { return s.ap }
func (s *p2pdServer) conns() int           { return s.d.Stats().Conns }
func (s *p2pdServer) close()               { s.d.Close() }

// plainServer is the baseline: the stdlib goroutine per connection with a
// 4 KiB Read/Write buffer.
type plainServer struct {
	ln   *net.TCPListener
	n    atomic.Int64
	wg   sync.WaitGroup
	mu   sync.Mutex
	open map[net.Conn]struct{}
	ap   netip.AddrPort
}

func startPlain() (server, error) {
	ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(loopbackAddr, 0)))
	if err != nil {
		return nil, err
	}
	s := &plainServer{ln: ln, open: map[net.Conn]struct{}{}, ap: ln.Addr().(*net.TCPAddr).AddrPort()}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			s.mu.Lock()
			s.open[c] = struct{}{}
			s.mu.Unlock()
			s.n.Add(1)
			s.wg.Go(func() { s.serve(c) })
		}
	})
	return s, nil
}

func (s *plainServer) serve(c net.Conn) {
	defer func() {
		s.n.Add(-1)
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
		c.Close()
	}()
	buf := make([]byte, 4<<10)
	for {
		k, err := c.Read(buf)
		if k > 0 {
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (s *plainServer) addr() netip.AddrPort { return s.ap }
func (s *plainServer) conns() int           { return int(s.n.Load()) }

func (s *plainServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
