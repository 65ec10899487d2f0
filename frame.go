package p2pd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// Framing sets where TCP messages begin and end. UDP needs none: a
// datagram is a message.
type Framing uint8

// Framings.
const (
	// FrameRaw: a message is whatever one read returns (at most
	// PipeConfig.BufferSize bytes), as P2PD does. Fine for request/reply
	// protocols with small messages; TCP may split or merge what the peer
	// sent.
	FrameRaw Framing = iota
	// FrameLine: messages end with '\n', which is not part of the message
	// ("\r" before it is kept). Send appends the '\n' and refuses messages
	// that contain one.
	FrameLine
	// FrameLength16: each message is preceded by its length as a 2-byte
	// big-endian integer (messages up to 65535 bytes).
	FrameLength16
	// FrameLength32: each message is preceded by its length as a 4-byte
	// big-endian integer.
	FrameLength32
)

// String returns "raw", "line", "length16" or "length32".
func (f Framing) String() string {
	switch f {
	case FrameRaw:
		return "raw"
	case FrameLine:
		return "line"
	case FrameLength16:
		return "length16"
	case FrameLength32:
		return "length32"
	}
	return fmt.Sprintf("Framing(%d)", uint8(f))
}

func (f Framing) valid() bool { return f <= FrameLength32 }

// header is the size of the length prefix.
func (f Framing) header() int {
	switch f {
	case FrameLength16:
		return 2
	case FrameLength32:
		return 4
	}
	return 0
}

// maxFor returns the effective message limit of f under max.
func (f Framing) maxFor(max int) int {
	if f == FrameLength16 && max > 0xffff {
		return 0xffff
	}
	return max
}

// splitFrame finds the first complete frame in b. It returns the message
// and the number of bytes the frame takes; n == 0 means b holds no
// complete frame yet. For FrameLine, the first skip bytes of b are known
// to hold no '\n'. A frame that is or must become larger than max is an
// error wrapping ErrFrameTooLarge, reported as soon as that is known: a
// length prefix over max, or more than max bytes without a newline.
func splitFrame(f Framing, b []byte, max, skip int) (msg []byte, n int, err error) {
	switch f {
	case FrameLine:
		i := bytes.IndexByte(b[skip:], '\n')
		if i < 0 {
			if len(b) > max {
				return nil, 0, fmt.Errorf("%w: no newline in %d bytes (limit %d)", ErrFrameTooLarge, len(b), max)
			}
			return nil, 0, nil
		}
		i += skip
		if i > max {
			return nil, 0, fmt.Errorf("%w: %d-byte line (limit %d)", ErrFrameTooLarge, i, max)
		}
		return b[:i], i + 1, nil
	case FrameLength16, FrameLength32:
		h := f.header()
		if len(b) < h {
			return nil, 0, nil
		}
		var l uint64
		if h == 2 {
			l = uint64(binary.BigEndian.Uint16(b))
		} else {
			l = uint64(binary.BigEndian.Uint32(b))
		}
		if l > uint64(max) {
			return nil, 0, fmt.Errorf("%w: %d-byte frame (limit %d)", ErrFrameTooLarge, l, max)
		}
		if uint64(len(b)-h) < l {
			return nil, 0, nil
		}
		return b[h : h+int(l)], h + int(l), nil
	}
	// FrameRaw: everything is one message.
	return b, len(b), nil
}

// appendFrame appends msg framed with f to dst.
func appendFrame(dst []byte, f Framing, msg []byte, max int) ([]byte, error) {
	if f != FrameRaw && len(msg) > f.maxFor(max) {
		return dst, fmt.Errorf("%w: %d-byte message (limit %d)", ErrFrameTooLarge, len(msg), f.maxFor(max))
	}
	switch f {
	case FrameLine:
		if bytes.IndexByte(msg, '\n') >= 0 {
			return dst, fmt.Errorf("%w: message contains a newline (FrameLine)", ErrInvalid)
		}
		dst = append(dst, msg...)
		return append(dst, '\n'), nil
	case FrameLength16:
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)))
	case FrameLength32:
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(msg)))
	}
	return append(dst, msg...), nil
}

// Read buffers of one size are pooled, so that a TCP connection waiting
// for data holds none (see connReader).
var bufPools sync.Map // int -> *sync.Pool of *[]byte

func bufPool(size int) *sync.Pool {
	if p, ok := bufPools.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := bufPools.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return p.(*sync.Pool)
}

// writeBufs holds the scratch buffers that framed sends build frames in.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// connReader reads the messages of one TCP connection and hands each to
// deliver, which must not keep the slice.
//
// Buffers: complete frames are delivered straight out of a pooled read
// buffer. On Unix, a plain TCP connection is read through its RawConn the
// way the net package reads it (try read(2), wait for readiness on
// EAGAIN), so that the pooled buffer goes back to the pool before every
// wait: an idle connection holds no buffer, and one inside a partial frame
// holds a carry buffer of the frame's bytes received so far. A frame that
// does not fit the pooled buffer is carried too: the carry grows with the
// bytes received, doubling, up to what the frame needs (MaxMsgSize plus
// header at most), and is dropped once the frame is delivered. Carry
// buffers are charged to the pipe's budget (PipeConfig.MaxBuffered). TLS
// connections, and other systems, read through net.Conn.Read and hold one
// pooled buffer for the connection's life (a tls.Conn holds its own
// buffers anyway), carrying only frames larger than it.
type connReader struct {
	src     io.Reader       // plain path
	rc      syscall.RawConn // raw path, nil when src is used
	rawFn   func(fd uintptr) bool
	deliver func(msg []byte)
	stopped func() bool // nil: never

	framing Framing
	max     int
	size    int
	pool    *sync.Pool
	budget  *budget // charged for carry buffers; nil: no cap

	bufp    *[]byte // the pooled buffer, nil if buf is a carry (or nil)
	buf     []byte
	r, w    int
	skip    int // FrameLine: bytes of buf[r:w] with no '\n'
	charged int // bytes of the budget the carry holds
	n       int // raw path results
	err     error
	parkNow bool // raw path: nothing to read and nothing pending ends fill with errParkNow
}

// errParkNow ends a fill that found nothing to read, with nothing pending,
// when the connection would rather park than wait on its goroutine.
var errParkNow = errors.New("p2pd: nothing to read")

func newConnReader(f Framing, max, size int, deliver func([]byte)) *connReader {
	max = f.maxFor(max)
	if f != FrameRaw && size > max+f.header()+1 {
		size = max + f.header() + 1
	}
	if size < 16 {
		size = 16
	}
	cr := &connReader{framing: f, max: max, size: size, deliver: deliver, pool: bufPool(size)}
	cr.rawFn = cr.rawRead
	return cr
}

func (cr *connReader) getBuf() {
	cr.bufp = cr.pool.Get().(*[]byte)
	cr.buf = *cr.bufp
}

// release drops the buffers and what they hold, and gives the budget back.
func (cr *connReader) release() {
	if cr.bufp != nil {
		cr.pool.Put(cr.bufp)
	}
	cr.budget.give(cr.charged)
	cr.bufp, cr.buf, cr.charged = nil, nil, 0
	cr.r, cr.w, cr.skip = 0, 0, 0
}

// pending reports whether a partial frame is buffered.
func (cr *connReader) pending() bool { return cr.r < cr.w }

// rawRead is the RawConn.Read callback: read once; on EAGAIN give the
// pooled buffer back, keeping a partial frame in a carry, and let the
// poller wait.
func (cr *connReader) rawRead(fd uintptr) bool {
	if cr.bufp == nil && cr.buf != nil && cr.w == len(cr.buf) && len(cr.buf) < cr.size {
		// The carry made for the wait (full, smaller than a pooled
		// buffer): read after its bytes in a pooled buffer, and move them
		// there only if something came.
		have := cr.w - cr.r
		bp := cr.pool.Get().(*[]byte)
		n, again, err := readRaw(fd, (*bp)[have:])
		if again {
			cr.pool.Put(bp)
			return false
		}
		copy(*bp, cr.buf[cr.r:cr.w])
		cr.dropCarry()
		cr.bufp, cr.buf, cr.r, cr.w = bp, *bp, 0, have
		cr.n, cr.err = n, err
		return true
	}
	if cr.buf == nil {
		cr.getBuf()
	}
	n, again, err := readRaw(fd, cr.buf[cr.w:])
	if again {
		switch {
		case !cr.pending():
			cr.release()
			if cr.parkNow {
				cr.n, cr.err = 0, errParkNow
				return true
			}
		case cr.bufp != nil:
			// Wait with the partial frame's bytes only.
			if err := cr.toCarry(cr.w - cr.r); err != nil {
				cr.n, cr.err = 0, err
				return true
			}
		}
		return false
	}
	cr.n, cr.err = n, err
	return true
}

// fill reads more bytes into buf[w:]. It returns io.EOF at the end of the
// stream.
func (cr *connReader) fill() error {
	var n int
	var err error
	if cr.rc != nil {
		cr.n, cr.err = 0, nil
		if rerr := cr.rc.Read(cr.rawFn); rerr != nil {
			return rerr
		}
		n, err = cr.n, cr.err
		if err == nil && n == 0 {
			err = io.EOF
		}
	} else {
		if cr.buf == nil {
			cr.getBuf()
		}
		n, err = cr.src.Read(cr.buf[cr.w:])
	}
	cr.w += n
	if n > 0 {
		if perr := cr.consume(); perr != nil {
			return perr
		}
	}
	if err == io.EOF && cr.pending() {
		return fmt.Errorf("%w: connection ended inside a %d-byte partial frame", ErrBadFrame, cr.w-cr.r)
	}
	return err
}

// consume delivers every complete frame and makes room for the next read.
func (cr *connReader) consume() error {
	if cr.framing == FrameRaw {
		cr.deliver(cr.buf[cr.r:cr.w])
		cr.r, cr.w = 0, 0
		return nil
	}
	for cr.r < cr.w {
		if cr.stopped != nil && cr.stopped() {
			return nil
		}
		msg, n, err := splitFrame(cr.framing, cr.buf[cr.r:cr.w], cr.max, cr.skip)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		cr.skip = 0
		cr.deliver(msg)
		cr.r += n
	}
	if cr.r == cr.w {
		cr.r, cr.w, cr.skip = 0, 0, 0
		if cr.bufp == nil {
			cr.dropCarry() // its frame is delivered
		}
		return nil
	}
	if cr.framing == FrameLine {
		cr.skip = cr.w - cr.r
	}
	return cr.room()
}

// room makes room for the rest of the partial frame in buf[r:w]: where it
// is, moved to the front, or in a carry that at most doubles the bytes
// received and holds at most what the frame needs.
func (cr *connReader) room() error {
	have, need := cr.w-cr.r, cr.frameSize()
	if cr.bufp == nil && cr.r > 0 {
		// A carry that held a line before this one (a length-framed carry
		// holds one frame): keep it about the size of what is left.
		if have < cr.size {
			cr.toPool()
			return nil
		}
		if len(cr.buf) > 2*have {
			return cr.toCarry(min(need, 2*have))
		}
	}
	if need <= len(cr.buf)-cr.r {
		return nil // fits where it is
	}
	if cr.r > 0 {
		copy(cr.buf, cr.buf[cr.r:cr.w])
		cr.r, cr.w = 0, have
	}
	if cr.w < len(cr.buf) {
		return nil
	}
	return cr.toCarry(min(need, 2*have))
}

// frameSize returns the most bytes the partial frame in buf[r:w] takes: a
// length frame's header and length (its header's size until that is in),
// or MaxMsgSize and the newline.
func (cr *connReader) frameSize() int {
	h := cr.framing.header()
	switch have := cr.w - cr.r; {
	case h == 0:
		return cr.max + 1
	case have < h:
		return h
	case h == 2:
		return h + int(binary.BigEndian.Uint16(cr.buf[cr.r:]))
	}
	return h + int(binary.BigEndian.Uint32(cr.buf[cr.r:]))
}

// toCarry moves the partial frame into a carry of n bytes (at least the
// bytes pending), charging the budget for the growth, and gives back the
// buffer it was in. Over the budget, it changes nothing and returns an
// error wrapping ErrOverBudget.
func (cr *connReader) toCarry(n int) error {
	have := cr.w - cr.r
	if d := n - cr.charged; d > 0 && !cr.budget.take(d) {
		return fmt.Errorf("%w: %d bytes of a partial frame, %d bytes buffered already (limit %d)",
			ErrOverBudget, have, cr.budget.n.Load(), cr.budget.max)
	}
	nb := make([]byte, n)
	copy(nb, cr.buf[cr.r:cr.w])
	if cr.bufp != nil {
		cr.pool.Put(cr.bufp)
		cr.bufp = nil
	}
	if d := cr.charged - n; d > 0 {
		cr.budget.give(d)
	}
	cr.buf, cr.r, cr.w, cr.charged = nb, 0, have, n
	return nil
}

// toPool moves the partial frame from the carry into a pooled buffer; it
// must fit.
func (cr *connReader) toPool() {
	have := cr.w - cr.r
	bp := cr.pool.Get().(*[]byte)
	copy(*bp, cr.buf[cr.r:cr.w])
	cr.dropCarry()
	cr.bufp, cr.buf, cr.r, cr.w = bp, *bp, 0, have
}

// dropCarry drops the carry and gives its budget back.
func (cr *connReader) dropCarry() {
	cr.budget.give(cr.charged)
	cr.buf, cr.charged = nil, 0
}

// isTimeout reports a deadline error.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
