package p2pd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

func TestFramedEcho(t *testing.T) {
	for _, f := range []Framing{FrameLine, FrameLength16, FrameLength32} {
		t.Run(f.String(), func(t *testing.T) {
			// A small buffer forces frames across reads and buffer growth.
			cfg := func(cb MsgCallback) *PipeConfig { return &PipeConfig{OnMsg: cb, Framing: f, BufferSize: 64} }
			srv := listen(t, TCP, loopRoute(t, IPv4), cfg(echoCB))
			in := newInbox()
			cli := dial(t, TCP, srv.LocalAddr(), cfg(in))
			var want []string
			for i := range 100 {
				msg := fmt.Sprintf("msg %d %s", i, bytes.Repeat([]byte{'x'}, i*13))
				want = append(want, msg)
				if err := cli.Send([]byte(msg), Peer{}); err != nil {
					t.Fatal(err)
				}
			}
			cli.Send(nil, Peer{}) // empty message
			for _, w := range append(want, "") {
				if m := in.next(t); string(m.Data) != w {
					t.Fatalf("got %d bytes, want %d", len(m.Data), len(w))
				}
			}
		})
	}
}

func TestBadFramesEndConnection(t *testing.T) {
	tests := []struct {
		name  string
		f     Framing
		max   int
		write []byte
		close bool
		want  error
	}{
		{"line too long", FrameLine, 100, bytes.Repeat([]byte{'a'}, 300), false, ErrFrameTooLarge},
		{"line endless", FrameLine, 0, nil, false, ErrFrameTooLarge}, // 2 MiB without newline, default 1 MiB limit
		{"length16 over max", FrameLength16, 100, []byte{0, 101}, false, ErrFrameTooLarge},
		{"length32 4GiB", FrameLength32, 0, []byte{0xff, 0xff, 0xff, 0xff}, false, ErrFrameTooLarge},
		{"length32 truncated", FrameLength32, 0, []byte{0, 0, 0, 9, 'a'}, true, ErrBadFrame},
		{"length16 half header", FrameLength16, 0, []byte{0}, true, ErrBadFrame},
		{"line truncated", FrameLine, 0, []byte("no newline"), true, ErrBadFrame},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newEndRec()
			in := newInbox()
			srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{Framing: tc.f, MaxMsgSize: tc.max, OnEnd: rec.onEnd, OnMsg: in})
			c, err := net.Dial("tcp", srv.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			good, _ := appendFrame(nil, tc.f, []byte("ok"), 100)
			c.Write(good)
			if m := in.next(t); string(m.Data) != "ok" {
				t.Fatalf("got %q", m.Data)
			}
			if tc.write == nil {
				go c.Write(bytes.Repeat([]byte{'a'}, 2<<20)) // ends with an error when the server closes
			} else {
				c.Write(tc.write)
			}
			if tc.close {
				c.(*net.TCPConn).CloseWrite()
			}
			_, reason := rec.wait(t, func(p *Pipe) bool { return p.Parent() == srv })
			if !errors.Is(reason, tc.want) {
				t.Fatalf("reason %v, want %v", reason, tc.want)
			}
			in.none(t, 10*time.Millisecond)
		})
	}
}

func TestSendFramingErrors(t *testing.T) {
	srv := listen(t, TCP, loopRoute(t, IPv4), &PipeConfig{Framing: FrameLine, MaxMsgSize: 10})
	cli := dial(t, TCP, srv.LocalAddr(), &PipeConfig{Framing: FrameLine, MaxMsgSize: 10})
	if err := cli.Send([]byte("a\nb"), Peer{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("newline in a line: %v", err)
	}
	if err := cli.Send(make([]byte, 11), Peer{}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if _, err := appendFrame(nil, FrameLength16, make([]byte, 70000), 1<<20); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("length16 over 65535: %v", err)
	}
}

// An idle plain TCP connection gives its read buffer back to the pool.
func TestIdleConnHoldsNoBuffer(t *testing.T) {
	if !haveRawRead {
		t.Skip("no raw reads on this system")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range []Framing{FrameRaw, FrameLine} {
		var got []string
		cr := newConnReader(f, 1<<20, 4096, func(m []byte) { got = append(got, string(m)) })
		cr.rc, _ = s.(*net.TCPConn).SyscallConn()
		c.Write([]byte("hello\n"))
		if err := cr.fill(); err != nil || len(got) != 1 {
			t.Fatalf("%v: fill: %v %q", f, err, got)
		}
		s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		if err := cr.fill(); !isTimeout(err) {
			t.Fatalf("%v: want a timeout, got %v", f, err)
		}
		if cr.buf != nil {
			t.Fatalf("%v: idle connection holds a %d-byte buffer", f, len(cr.buf))
		}
		// A partial frame keeps its buffer.
		if f == FrameLine {
			c.Write([]byte("par"))
			s.SetReadDeadline(time.Now().Add(time.Second))
			cr.fill()
			s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			cr.fill()
			if cr.buf == nil || !cr.pending() {
				t.Fatal("partial frame lost")
			}
		}
		s.SetReadDeadline(time.Time{})
	}
}

// chunkReader returns data in reads of at most n bytes.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(b []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(b), r.n, len(r.data))
	copy(b, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

// decodeAll runs data through a connReader as a connection would, in
// chunks, and checks the invariants that hold for any input.
func decodeAll(t *testing.T, f Framing, data []byte, maxSize, bufSize, chunk int) {
	t.Helper()
	var frames [][]byte
	cr := newConnReader(f, maxSize, bufSize, func(m []byte) { frames = append(frames, bytes.Clone(m)) })
	limit := max(cr.size, f.maxFor(maxSize)+f.header()+1)
	cr.src = &chunkReader{data: data, n: chunk}
	b := &budget{max: 1 << 40}
	cr.budget = b
	var err error
	for i := 0; i <= len(data)+1; i++ {
		if err = cr.fill(); err != nil {
			break
		}
		if cap(cr.buf) > limit {
			t.Fatalf("buffer grew to %d, limit %d", cap(cr.buf), limit)
		}
		if pending := cr.w - cr.r; cr.bufp == nil && cap(cr.buf) > 2*pending+slack {
			t.Fatalf("a %d-byte carry for %d bytes pending", cap(cr.buf), pending)
		}
		if b.n.Load() != int64(cr.charged) {
			t.Fatalf("budget %d, carry charged %d", b.n.Load(), cr.charged)
		}
	}
	cr.release()
	if b.n.Load() != 0 {
		t.Fatalf("%d bytes of the budget not given back", b.n.Load())
	}
	var re []byte
	for _, m := range frames {
		if len(m) > f.maxFor(maxSize) {
			t.Fatalf("%d-byte frame over max %d", len(m), maxSize)
		}
		var eerr error
		if re, eerr = appendFrame(re, f, m, maxSize); eerr != nil {
			t.Fatalf("re-encoding a decoded frame: %v", eerr)
		}
	}
	if !bytes.HasPrefix(data, re) {
		t.Fatalf("re-encoded frames are not a prefix of the input")
	}
	switch {
	case errors.Is(err, io.EOF):
		if len(re) != len(data) {
			t.Fatalf("clean EOF with %d of %d bytes decoded", len(re), len(data))
		}
	case errors.Is(err, ErrBadFrame):
		if len(re) == len(data) {
			t.Fatal("ErrBadFrame with everything decoded")
		}
	case errors.Is(err, ErrFrameTooLarge):
	default:
		t.Fatalf("unexpected error %v", err)
	}
	// The raw path, waiting after every chunk, gives the same frames and
	// the same kind of end, holding about what it received at each wait.
	if haveRawRead {
		rframes, rerr := decodeRaw(t, f, data, maxSize, bufSize, chunk)
		if len(rframes) != len(frames) {
			t.Fatalf("raw path: %d frames, plain path %d", len(rframes), len(frames))
		}
		for i := range frames {
			if !bytes.Equal(rframes[i], frames[i]) {
				t.Fatalf("raw path: frame %d differs", i)
			}
		}
		for _, e := range []error{io.EOF, ErrBadFrame, ErrFrameTooLarge} {
			if errors.Is(rerr, e) != errors.Is(err, e) {
				t.Fatalf("raw path ends with %v, plain path with %v", rerr, err)
			}
		}
	}
	// The same input in one piece gives the same frames.
	var whole [][]byte
	for rest := data; ; {
		m, n, err := splitFrame(f, rest, f.maxFor(maxSize), 0)
		if err != nil || n == 0 {
			break
		}
		whole = append(whole, m)
		rest = rest[n:]
	}
	if len(whole) != len(frames) {
		t.Fatalf("chunked decoding gave %d frames, splitFrame %d", len(frames), len(whole))
	}
}

// Inputs that once failed, kept as table cases, with the fuzz seeds.
var frameCases = []struct {
	data             []byte
	max, size, chunk int
}{
	{[]byte("a\nb\n"), 10, 16, 1},
	{[]byte("\n\n\n"), 1, 16, 2},                                  // empty lines
	{[]byte("0123456789\n"), 10, 16, 3},                           // exactly max
	{[]byte("0123456789A\n"), 10, 16, 3},                          // max + 1
	{bytes.Repeat([]byte("abcdefgh"), 10), 16, 16, 5},             // no newline, over max across reads
	{[]byte("x\r\ny\r\n"), 10, 16, 4},                             // "\r" kept
	{[]byte{0, 0, 0, 3, 'a', 'b', 'c', 0, 0}, 10, 16, 1},          // a frame then half a header
	{[]byte{0, 0, 0, 0}, 10, 16, 1},                               // empty frame
	{[]byte{0x7f, 0xff, 0xff, 0xff}, 1 << 20, 16, 4},              // huge length
	{append([]byte{0, 0, 0, 40}, make([]byte, 40)...), 64, 16, 7}, // frame larger than the buffer
}

func TestFrameCases(t *testing.T) {
	for i, c := range frameCases {
		for _, f := range []Framing{FrameLine, FrameLength16, FrameLength32} {
			t.Run(fmt.Sprint(i, f), func(t *testing.T) { decodeAll(t, f, c.data, c.max, c.size, c.chunk) })
		}
	}
}

func fuzzFraming(f *testing.F, fr Framing) {
	for _, c := range frameCases {
		f.Add(c.data, uint16(c.max), uint16(c.size), uint8(c.chunk))
	}
	f.Fuzz(func(t *testing.T, data []byte, max uint16, size uint16, chunk uint8) {
		decodeAll(t, fr, data, int(max%4096)+1, int(size%4096)+1, int(chunk)+1)
	})
}

func FuzzFrameLine(f *testing.F) { fuzzFraming(f, FrameLine) }

func FuzzFrameLength(f *testing.F) {
	for _, c := range frameCases {
		f.Add(c.data, uint16(c.max), uint16(c.size), uint8(c.chunk), true)
		f.Add(c.data, uint16(c.max), uint16(c.size), uint8(c.chunk), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, max uint16, size uint16, chunk uint8, wide bool) {
		fr := FrameLength16
		if wide {
			fr = FrameLength32
		}
		decodeAll(t, fr, data, int(max%4096)+1, int(size%4096)+1, int(chunk)+1)
	})
}

func TestFramingString(t *testing.T) {
	if FrameLength32.String() != "length32" || Framing(9).String() != "Framing(9)" {
		t.Fatal(FrameLength32.String())
	}
	_ = context.Background
}
