package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pd/p2pd/bench/internal/loopback"
)

// dialers is how many connections the client opens at once: enough to be
// quick, few enough for the listen backlog.
const dialers = 32

// runClient is the child: it opens n connections to addr, prints
// "connected N", in msg mode sends one 64-byte message per connection per
// second and checks its echo, and when stdin closes (the parent is done
// or gone) prints "done sent=S ok=K errors=E" and exits.
func runClient(addr, mode string, n int) error {
	ap, err := loopback.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	if n < 1 || n > 60000 {
		return fmt.Errorf("-n %d: want 1..60000", n)
	}
	if err := raiseNoFile(n + 64); err != nil {
		return err
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		next    atomic.Int64
		dialErr atomic.Pointer[error]
		wg      sync.WaitGroup
	)
	d := net.Dialer{Timeout: 5 * time.Second}
	for range dialers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || dialErr.Load() != nil {
					return
				}
				c, err := d.Dial("tcp4", ap.String())
				if err != nil {
					err = fmt.Errorf("connection %d: %w", i, err)
					dialErr.CompareAndSwap(nil, &err)
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if p := dialErr.Load(); p != nil {
		return *p
	}
	fmt.Printf("connected %d\n", n)

	stop := make(chan struct{})
	var sent, ok, errs atomic.Int64
	if mode == "msg" {
		for i, c := range conns {
			wg.Go(func() { talk(c, uint64(i), stop, &sent, &ok, &errs) })
		}
	}
	io.Copy(io.Discard, os.Stdin) // until the parent closes it
	close(stop)
	for _, c := range conns {
		c.SetDeadline(time.Now()) // unblocks a talk waiting for an echo
	}
	wg.Wait()
	fmt.Printf("done sent=%d ok=%d errors=%d\n", sent.Load(), ok.Load(), errs.Load())
	return nil
}

// talk sends one 64-byte message a second (the first after a random part
// of a second, so that the connections spread over the second) and reads
// its echo back within 5 s, until stop.
func talk(c net.Conn, id uint64, stop <-chan struct{}, sent, ok, errs *atomic.Int64) {
	msg := make([]byte, 64)
	got := make([]byte, 64)
	t := time.NewTimer(time.Duration(rand.Int64N(int64(time.Second))))
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		t.Reset(time.Second)
		binary.LittleEndian.PutUint64(msg, id)
		binary.LittleEndian.PutUint64(msg[8:], seq)
		for i := 16; i < len(msg); i++ {
			msg[i] = byte(id + seq + uint64(i))
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		sent.Add(1)
		_, err := c.Write(msg)
		if err == nil {
			_, err = io.ReadFull(c, got)
		}
		select {
		case <-stop:
			return // the deadline set at stop, not an error
		default:
		}
		if err != nil {
			errs.Add(1)
			fmt.Fprintf(os.Stderr, "conns: client connection %d: %v\n", id, err)
			return
		}
		if !bytes.Equal(got, msg) {
			errs.Add(1)
			fmt.Fprintf(os.Stderr, "conns: client connection %d: echo differs from message %d\n", id, seq)
			return
		}
		ok.Add(1)
	}
}
