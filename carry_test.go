package p2pd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// slack is the additive constant the held-bytes bounds allow.
const slack = 64

// On the plain path (TLS, systems without raw reads) the reader keeps its
// pooled buffer, but a frame larger than it grows a buffer with the bytes
// received, never to what the header claims.
func TestFrameGrowsWithReceived(t *testing.T) {
	const maxMsg, size = 1 << 20, 4096
	for _, f := range []Framing{FrameLine, FrameLength16, FrameLength32} {
		t.Run(f.String(), func(t *testing.T) {
			msg := bytes.Repeat([]byte("0123456789abcdef"), f.maxFor(maxMsg)/16+1)[:f.maxFor(maxMsg)]
			frame, _ := appendFrame(nil, f, msg, maxMsg)
			var got [][]byte
			cr := newConnReader(f, maxMsg, size, func(m []byte) { got = append(got, bytes.Clone(m)) })
			defer cr.release()
			cr.src = &chunkReader{data: frame, n: 1000}
			for range len(frame) { // bounded: each fill reads at least a byte
				if err := cr.fill(); err != nil {
					t.Fatal(err)
				}
				if len(got) > 0 {
					break
				}
				pending := cr.w - cr.r
				if cr.bufp == nil && cap(cr.buf) > 2*pending+slack {
					t.Fatalf("%d bytes of a frame received, a %d-byte buffer allocated", pending, cap(cr.buf))
				}
			}
			if len(got) != 1 || !bytes.Equal(got[0], msg) {
				t.Fatalf("got %d frames, want the %d-byte message", len(got), len(msg))
			}
		})
	}
}

// waitUntil polls cond for up to 4*waitFor.
func waitUntil(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	for deadline := time.Now().Add(4 * waitFor); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for "+format, args...)
		}
	}
}

// The budget refuses a carry that would take it over, and release gives
// everything back.
func TestBudgetRefusesGrowth(t *testing.T) {
	for _, f := range []Framing{FrameLine, FrameLength16, FrameLength32} {
		t.Run(f.String(), func(t *testing.T) {
			b := &budget{max: 50}
			frame, _ := appendFrame(nil, f, bytes.Repeat([]byte{'x'}, 100), 1<<20)
			cr := newConnReader(f, 1<<20, 16, func([]byte) {})
			cr.budget = b
			cr.src = &chunkReader{data: frame, n: 5}
			var err error
			for range len(frame) {
				if err = cr.fill(); err != nil {
					break
				}
				if b.n.Load() != int64(cr.charged) || cr.charged > 50 {
					t.Fatalf("budget %d, carry charged %d", b.n.Load(), cr.charged)
				}
			}
			if !errors.Is(err, ErrOverBudget) {
				t.Fatalf("fill: %v, want ErrOverBudget", err)
			}
			cr.release()
			if b.n.Load() != 0 {
				t.Fatalf("%d bytes of the budget not given back", b.n.Load())
			}
		})
	}
}

func TestBudgetConfig(t *testing.T) {
	var c PipeConfig
	if b := c.newBudget(); b == nil || b.max != DefaultMaxBuffered {
		t.Fatalf("zero MaxBuffered: %+v", b)
	}
	c.MaxMsgSize = DefaultMaxBuffered
	if b := c.newBudget(); b == nil || b.max != 2*DefaultMaxBuffered {
		t.Fatalf("zero MaxBuffered, MaxMsgSize %d: %+v", c.MaxMsgSize, b)
	}
	if b := (&PipeConfig{MaxBuffered: -1}).newBudget(); b != nil {
		t.Fatalf("negative MaxBuffered: %+v", b)
	}
	// Each server pipe has its own budget; its connections share it.
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{MaxBuffered: 1000})
	srv2 := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{MaxBuffered: 1000})
	if srv.cfg.budget == nil || srv.cfg.budget == srv2.cfg.budget || srv.cfg.budget.max != 1000 {
		t.Fatal("server pipes do not each have a budget of MaxBuffered")
	}
	if srv3 := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{MaxBuffered: -1}); srv3.cfg.budget != nil {
		t.Fatal("negative MaxBuffered has a budget")
	}
}

// A Daemon's listeners share one budget: a partial frame on one listener
// leaves less for the others, and is given back once delivered. (Frames
// larger than the read buffer are carried on every path.)
func TestBudgetSharedByDaemon(t *testing.T) {
	rec := newEndRec()
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB, OnEnd: rec.onEnd, Logger: quietLogger(),
		Framing: FrameLength32, MaxBuffered: 3000, BufferSize: 1024, IdleTimeout: -1}}
	t.Cleanup(func() { d.Close() })
	var ls []*Pipe
	for range 2 {
		l, err := d.AddListener(context.Background(), TCP, loopRoute(t, IPv4))
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	b := ls[0].cfg.budget
	if b == nil || ls[1].cfg.budget != b {
		t.Fatal("the listeners do not share one budget")
	}
	frame, _ := appendFrame(nil, FrameLength32, bytes.Repeat([]byte{'x'}, 2500), 1<<20)
	a, err := net.Dial("tcp4", ls[0].LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Write(frame[:2004])
	waitUntil(t, func() bool { return b.n.Load() >= 2004 }, "the first partial frame carried")

	c, err := net.Dial("tcp4", ls[1].LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(frame[:2004])
	if p, reason := rec.wait(t, func(p *Pipe) bool { return p.Parent() == ls[1] }); !errors.Is(reason, ErrOverBudget) {
		t.Fatalf("%v ended with %v, want ErrOverBudget", p.RemoteAddr(), reason)
	}
	if s := d.Stats(); s.OverBudget != 1 || ls[1].Stats().OverBudget != 1 || ls[0].Stats().OverBudget != 0 {
		t.Fatalf("OverBudget: daemon %d, listeners %d and %d, want 1, 0 and 1", s.OverBudget, ls[0].Stats().OverBudget, ls[1].Stats().OverBudget)
	}

	a.Write(frame[2004:])
	a.SetReadDeadline(time.Now().Add(waitFor))
	echo := make([]byte, len(frame))
	if _, err := io.ReadFull(a, echo); err != nil || !bytes.Equal(echo, frame) {
		t.Fatalf("echo: %v", err)
	}
	waitUntil(t, func() bool { return b.n.Load() == 0 }, "the budget given back")
}
