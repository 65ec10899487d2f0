package main

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// TestRaw: the raw server echoes every datagram to its sender, large ones
// whole, from several sockets, and stops by itself soon after its context.
func TestRaw(t *testing.T) {
	addr, err := loopback.ServerAddr("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait, err := startRaw(ctx, "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for s := range 3 {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for i, size := range []int{1, 64, 1500, 60000} {
			msg := bytes.Repeat([]byte{byte(s*16 + i)}, size)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("socket %d, %d bytes: %v", s, size, err)
			}
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("socket %d: sent %d bytes, got back %d that differ", s, size, n)
			}
		}
	}
	if _, err := startRaw(ctx, "tcp", addr); err == nil {
		t.Error("a raw TCP server starts")
	}
	cancel()
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("wait: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the raw server did not stop within 2s of its context")
	}
}
