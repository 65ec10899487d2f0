//go:build unix

package p2pd

import (
	"bytes"
	"errors"
	"io"
	"syscall"
	"testing"
)

// errWait is what waitConn.Read returns where a real RawConn would wait.
var errWait = errors.New("test: would wait")

// waitConn is a syscall.RawConn over the read end of a non-blocking pipe
// whose Read returns errWait instead of waiting for readiness: a test sees
// exactly what a connReader holds while its connection waits.
type waitConn struct{ r, w int }

func newWaitConn(t testing.TB) *waitConn {
	t.Helper()
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	c := &waitConn{r: fds[0], w: fds[1]}
	t.Cleanup(func() { syscall.Close(c.r); c.closeWrite() })
	return c
}

func (c *waitConn) Control(f func(fd uintptr)) error  { f(uintptr(c.r)); return nil }
func (c *waitConn) Write(func(fd uintptr) bool) error { return syscall.EBADF }
func (c *waitConn) Read(f func(fd uintptr) bool) error {
	if f(uintptr(c.r)) {
		return nil
	}
	return errWait
}

// send writes b (at most the pipe's capacity) to the pipe.
func (c *waitConn) send(t testing.TB, b []byte) {
	t.Helper()
	for len(b) > 0 {
		n, err := syscall.Write(c.w, b)
		if err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
}

func (c *waitConn) closeWrite() {
	if c.w >= 0 {
		syscall.Close(c.w)
		c.w = -1
	}
}

// settle fills cr until it would wait (or fails), and returns the error.
func settle(cr *connReader) error {
	for range 1 << 16 { // bounded: every fill consumes bytes or ends
		if err := cr.fill(); err != nil {
			return err
		}
	}
	return errors.New("test: reader never waits")
}

// checkWaiting checks what cr holds while it waits with received bytes of
// a partial frame: about those bytes (at most 2x + slack), no pooled
// buffer, and nothing at all when no frame is pending.
func checkWaiting(t *testing.T, cr *connReader, received int) {
	t.Helper()
	switch held := cap(cr.buf); {
	case !cr.pending() && cr.buf != nil:
		t.Fatalf("nothing pending, yet a %d-byte buffer is held", held)
	case cr.pending() && cr.bufp != nil:
		t.Fatalf("waiting with %d bytes of a partial frame in a pooled %d-byte buffer", received, held)
	case held > 2*received+slack:
		t.Fatalf("waiting with %d bytes of a partial frame holds %d bytes", received, held)
	}
}

// A header that claims the largest frame, then a wait: the reader holds
// about the header, not the frame and not a pooled buffer. Then the frame
// trickles in, and at every wait the reader holds at most about twice what
// it received. Once the frame is delivered, it holds nothing.
func TestFrameWaitHoldsReceived(t *testing.T) {
	const maxMsg = 1 << 20
	for _, f := range []Framing{FrameLine, FrameLength16, FrameLength32} {
		t.Run(f.String(), func(t *testing.T) {
			size := f.maxFor(maxMsg)
			msg := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
			frame, err := appendFrame(nil, f, msg, maxMsg)
			if err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			cr := newConnReader(f, maxMsg, DefaultTCPBufferSize, func(m []byte) { got = append(got, bytes.Clone(m)) })
			wc := newWaitConn(t)
			cr.rc = wc
			defer cr.release()
			// The first piece is the header (a few bytes for FrameLine),
			// then pieces of assorted sizes.
			pieces := []int{max(f.header(), 3), 1, 2, 7, 100, 1000, 4096, 5000, 8192, 16 << 10, 17, 12 << 10, 16 << 10} // each within a pipe's capacity
			sent := 0
			for i := 0; sent < len(frame); i++ {
				n := min(pieces[i%len(pieces)], len(frame)-sent)
				wc.send(t, frame[sent:sent+n])
				sent += n
				if err := settle(cr); err != errWait {
					t.Fatalf("after %d bytes: %v", sent, err)
				}
				if sent < len(frame) {
					if len(got) != 0 {
						t.Fatalf("a frame delivered after %d of %d bytes", sent, len(frame))
					}
					if !cr.pending() {
						t.Fatalf("after %d bytes: nothing pending", sent)
					}
				}
				checkWaiting(t, cr, sent)
			}
			if len(got) != 1 || !bytes.Equal(got[0], msg) {
				t.Fatalf("got %d frames, want the %d-byte message", len(got), len(msg))
			}
		})
	}
}

// Short partial frames (part of a header; a header and a few bytes of a
// frame that would fit the pooled buffer) cost their size, not a pooled
// buffer, while the connection waits.
func TestFrameShortPartialHoldsNoPooledBuffer(t *testing.T) {
	cases := []struct {
		name string
		f    Framing
		data []byte
	}{
		{"length32 3 of 4 header bytes", FrameLength32, []byte{0, 0, 4}},
		{"length32 header and 8 of 1024", FrameLength32, append([]byte{0, 0, 4, 0}, "01234567"...)},
		{"length16 1 of 2 header bytes", FrameLength16, []byte{0}},
		{"length16 header and 5 of 100", FrameLength16, []byte{0, 100, 1, 2, 3, 4, 5}},
		{"line 10 bytes", FrameLine, []byte("0123456789")},
		{"a frame then part of one", FrameLength32, []byte{0, 0, 0, 2, 'o', 'k', 0, 0, 0, 9, 'a'}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cr := newConnReader(tc.f, 1<<20, DefaultTCPBufferSize, func([]byte) {})
			wc := newWaitConn(t)
			cr.rc = wc
			defer cr.release()
			wc.send(t, tc.data)
			if err := settle(cr); err != errWait {
				t.Fatal(err)
			}
			if !cr.pending() {
				t.Fatal("nothing pending")
			}
			checkWaiting(t, cr, len(tc.data))
		})
	}
}

// decodeRaw runs data through a connReader on the raw path, the reader
// waiting after each chunk, and checks what it holds at every wait. It
// returns the frames and the final error.
func decodeRaw(t *testing.T, f Framing, data []byte, maxSize, bufSize, chunk int) ([][]byte, error) {
	t.Helper()
	var frames [][]byte
	cr := newConnReader(f, maxSize, bufSize, func(m []byte) { frames = append(frames, bytes.Clone(m)) })
	b := &budget{max: 1 << 40}
	cr.budget = b
	wc := newWaitConn(t)
	cr.rc = wc
	defer func() {
		cr.release()
		if b.n.Load() != 0 {
			t.Fatalf("raw path: %d bytes of the budget not given back", b.n.Load())
		}
	}()
	var err error
	for sent := 0; sent < len(data); {
		n := min(chunk, len(data)-sent)
		wc.send(t, data[sent:sent+n])
		sent += n
		if err = settle(cr); err != errWait {
			return frames, err
		}
		checkWaiting(t, cr, cr.w-cr.r)
		if b.n.Load() != int64(cap(cr.buf)) {
			t.Fatalf("raw path: a %d-byte carry, %d bytes charged", cap(cr.buf), b.n.Load())
		}
	}
	wc.closeWrite()
	err = settle(cr)
	if err == errWait {
		t.Fatal("the reader waits after the end of the stream")
	}
	if cr.pending() && errors.Is(err, io.EOF) {
		t.Fatal("clean EOF inside a frame")
	}
	return frames, err
}

// Readers that share a budget: a partial frame held over a wait is
// charged its bytes, one that would take the total over the budget is
// refused, and release gives everything back.
func TestBudgetSharedWhileWaiting(t *testing.T) {
	for _, f := range []Framing{FrameLine, FrameLength16, FrameLength32} {
		t.Run(f.String(), func(t *testing.T) {
			b := &budget{max: 10000}
			frame, _ := appendFrame(nil, f, bytes.Repeat([]byte{'x'}, 20000), 1<<20)
			reader := func() (*connReader, *waitConn) {
				cr := newConnReader(f, 1<<20, DefaultTCPBufferSize, func([]byte) {})
				cr.budget = b
				wc := newWaitConn(t)
				cr.rc = wc
				return cr, wc
			}
			a, aw := reader()
			aw.send(t, frame[:6000])
			if err := settle(a); err != errWait {
				t.Fatal(err)
			}
			if b.n.Load() != 6000 {
				t.Fatalf("6000 bytes waiting, %d charged", b.n.Load())
			}
			c, cw := reader()
			cw.send(t, frame[:6000])
			if err := settle(c); !errors.Is(err, ErrOverBudget) {
				t.Fatalf("second reader: %v, want ErrOverBudget", err)
			}
			c.release()
			if b.n.Load() != 6000 {
				t.Fatalf("after the refusal, %d charged", b.n.Load())
			}
			// a grows within the budget, then is refused past it.
			aw.send(t, frame[6000:9000])
			if err := settle(a); err != errWait || b.n.Load() != 9000 {
				t.Fatalf("9000 bytes waiting: %v, %d charged", err, b.n.Load())
			}
			aw.send(t, frame[9000:12000])
			if err := settle(a); !errors.Is(err, ErrOverBudget) {
				t.Fatalf("12000 bytes: %v, want ErrOverBudget", err)
			}
			a.release()
			if b.n.Load() != 0 {
				t.Fatalf("%d bytes of the budget not given back", b.n.Load())
			}
		})
	}
}
