//go:build linux

package soak

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Message kinds: the first byte of every message tells the server's
// callback what to do with it.
const (
	kindEcho  = 'E' // echo it
	kindPanic = 'P' // panic (edge daemon): never echoed
	kindBlock = 'B' // sleep blockFor, then echo (edge daemon)
	kindFlood = 'F' // UDP: sleep floodDelay, then echo (edge daemon)
)

// A message is kind, 3 zero bytes, the connection id (4 bytes), the
// sequence number (8 bytes) and 0 to 47 payload bytes derived from both,
// so that every message differs from its neighbours.
const (
	msgHeader = 16
	msgMaxLen = msgHeader + 47
)

// tally counts the TCP messages of a group of clients. A message is acked
// when its echo came back whole, verified when the echo equals, byte for
// byte, what was sent.
type tally struct {
	sent, acked, verified, corrupt atomic.Uint64
}

func (t *tally) add(o *tally) {
	t.sent.Add(o.sent.Load())
	t.acked.Add(o.acked.Load())
	t.verified.Add(o.verified.Load())
	t.corrupt.Add(o.corrupt.Load())
}

var errCorrupt = errors.New("echo differs from the message sent")

// fillMsg writes message seq of connection id into b (len msgMaxLen at
// least) and returns it.
func fillMsg(b []byte, kind byte, id uint32, seq uint64) []byte {
	n := msgHeader + int((seq*7+uint64(id))%48)
	m := b[:n]
	m[0], m[1], m[2], m[3] = kind, 0, 0, 0
	binary.BigEndian.PutUint32(m[4:], id)
	binary.BigEndian.PutUint64(m[8:], seq)
	for i := msgHeader; i < n; i++ {
		m[i] = byte(uint64(i)*31 + seq + uint64(id))
	}
	return m
}

// framedConn is a TCP client speaking FrameLength32 (a 4-byte big-endian
// length, then the message), one request and one reply at a time.
type framedConn struct {
	c   net.Conn
	id  uint32
	seq uint64
	t   *tally
	out [4 + msgMaxLen]byte // the last frame sent
	in  [4 + msgMaxLen]byte
}

func dialFramed(ctx context.Context, to netip.AddrPort, id uint32, t *tally) (*framedConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", to.String())
	if err != nil {
		return nil, err
	}
	return &framedConn{c: c, id: id, t: t}, nil
}

// send writes the next message of the given kind; counted says whether it
// expects an echo (and so counts as sent).
func (f *framedConn) send(kind byte, counted bool, timeout time.Duration) error {
	f.seq++
	m := fillMsg(f.out[4:], kind, f.id, f.seq)
	binary.BigEndian.PutUint32(f.out[:4], uint32(len(m)))
	f.c.SetWriteDeadline(time.Now().Add(timeout))
	if counted {
		f.t.sent.Add(1)
	}
	_, err := f.c.Write(f.out[:4+len(m)])
	return err
}

// recvEcho reads one frame and checks it is the echo of the last message
// sent.
func (f *framedConn) recvEcho(timeout time.Duration) error {
	f.c.SetReadDeadline(time.Now().Add(timeout))
	if _, err := io.ReadFull(f.c, f.in[:4]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(f.in[:4])
	if n > msgMaxLen {
		f.t.corrupt.Add(1)
		return fmt.Errorf("%w: frame of %d bytes", errCorrupt, n)
	}
	if _, err := io.ReadFull(f.c, f.in[4:4+n]); err != nil {
		return err
	}
	f.t.acked.Add(1)
	want := f.out[4 : 4+binary.BigEndian.Uint32(f.out[:4])]
	if !bytes.Equal(f.in[4:4+n], want) {
		f.t.corrupt.Add(1)
		return fmt.Errorf("%w: conn %d seq %d", errCorrupt, f.id, f.seq)
	}
	f.t.verified.Add(1)
	return nil
}

// exchange sends one message and checks its echo.
func (f *framedConn) exchange(kind byte, timeout time.Duration) error {
	if err := f.send(kind, true, timeout); err != nil {
		return err
	}
	return f.recvEcho(timeout)
}

func (f *framedConn) Close() error { return f.c.Close() }

// firstErr keeps the first error of a phase, for the report.
type firstErr struct {
	mu  sync.Mutex
	err string
}

func (e *firstErr) set(format string, a ...any) {
	e.mu.Lock()
	if e.err == "" {
		e.err = fmt.Sprintf(format, a...)
	}
	e.mu.Unlock()
}

// dialFailed counts a failed dial in errs and keeps it, unless ctx has
// ended: a client stopped by the end of its phase has not failed.
func (e *firstErr) dialFailed(ctx context.Context, errs *atomic.Int64, format string, a ...any) {
	if ctx.Err() == nil {
		errs.Add(1)
		e.set(format, a...)
	}
}

func (e *firstErr) get() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// sleepCtx sleeps d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// maxInt64 raises m to v.
func maxInt64(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}
