package mmsg

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"golang.org/x/sys/unix"
)

// keptChildEnv makes TestKeptMsgChild run: it is the child process of
// TestKeptMsgAfterPut.
const keptChildEnv = "P2PD_MMSG_KEPT_CHILD"

// TestKeptMsgAfterPut runs TestKeptMsgChild in a child process, so that a
// fault there (receive memory freed under a kept slice) fails this test
// instead of killing the test binary.
func TestKeptMsgAfterPut(t *testing.T) {
	if os.Getenv(keptChildEnv) == "1" {
		t.Skip("this is the child")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKeptMsgChild$", "-test.count=1", "-test.v", "-test.timeout=50s")
	cmd.Env = append(os.Environ(), keptChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestKeptMsgChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestKeptMsgChild keeps a datagram's slice past PutRecv, with more
// batches put back at once than the old pool kept mapped (it unmapped
// the rest), and reads it after GCs: the bytes must still be there.
func TestKeptMsgChild(t *testing.T) {
	if os.Getenv(keptChildEnv) != "1" {
		return // the entry point of TestKeptMsgAfterPut's child process
	}
	const n, slot = 5, 4096 // a size no other test uses
	rx, tx := loopPair(t)
	want := bytes.Repeat([]byte("kept "), 100)
	if _, err := tx.Write(want); err != nil {
		t.Fatal(err)
	}
	b := GetRecv(n, slot, false)
	recvSome(t, rx, b)
	kept, _, _, _ := b.Msg(0)

	// The old pool kept 4*GOMAXPROCS+4: b goes back after more.
	var others []*RecvBatch
	for range 4*runtime.GOMAXPROCS(0) + 6 {
		others = append(others, GetRecv(n, slot, false))
	}
	for _, x := range others {
		PutRecv(x)
	}
	PutRecv(b)
	b, others = nil, nil
	for range 3 {
		runtime.GC()
	}
	garbage := make([][]byte, 0, 256) // give freed memory a chance to be reused
	for i := range cap(garbage) {
		garbage = append(garbage, bytes.Repeat([]byte{byte(i)}, slot))
	}
	runtime.GC()
	if !bytes.Equal(kept, want) {
		t.Errorf("kept slice changed: %q", kept[:min(len(kept), 32)])
	}
	runtime.KeepAlive(garbage)
}

// TestIdleBatchesFreed: batches put back and not taken again are freed
// after a few GCs, however many the pool once held.
func TestIdleBatchesFreed(t *testing.T) {
	const n, slot = 7, 1000 // a size no other test uses
	var ws []weak.Pointer[RecvBatch]
	var bs []*RecvBatch
	for range 3 {
		b := GetRecv(n, slot, false)
		bs = append(bs, b)
		ws = append(ws, weak.Make(b))
	}
	for _, b := range bs {
		PutRecv(b)
	}
	bs = nil
	live := len(ws)
	for range 10 {
		runtime.GC()
		live = 0
		for _, w := range ws {
			if w.Value() != nil {
				live++
			}
		}
		if live == 0 {
			return
		}
	}
	t.Errorf("%d of %d idle batches still alive after 10 GCs", live, len(ws))
}

// TestRecvNoAlloc: the steady path (take a batch, receive, read the
// datagram, put it back) allocates nothing.
func TestRecvNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	rx, tx := loopPair(t)
	rc := fdOf(t, rx)
	msg := []byte("steady")
	var b *RecvBatch
	var got int
	var rerr error
	read := func(fd uintptr) bool {
		if b == nil {
			b = GetRecv(8, 2048, false)
		}
		got, rerr = b.Recv(fd)
		return rerr != unix.EAGAIN
	}
	allocs := testing.AllocsPerRun(200, func() {
		tx.Write(msg)
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := rc.Read(read); err != nil || rerr != nil || got != 1 {
			t.Fatalf("read: %v %v, %d datagrams", err, rerr, got)
		}
		if m, _, _, _ := b.Msg(0); !bytes.Equal(m, msg) {
			t.Fatalf("got %q", m)
		}
		PutRecv(b)
		b = nil
	})
	if allocs != 0 {
		t.Errorf("%v allocations per datagram", allocs)
	}
}

// loopPair returns a socket on 127.0.0.1 and another connected to it.
func loopPair(t testing.TB) (rx, tx *net.UDPConn) {
	t.Helper()
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skip("no IPv4 loopback:", err)
	}
	t.Cleanup(func() { rx.Close() })
	tx, err = net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	return rx, tx
}

// recvSome makes one successful Recv into b, waiting up to 5 s.
func recvSome(t *testing.T, c *net.UDPConn, b *RecvBatch) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var n int
	var rerr error
	if err := fdOf(t, c).Read(func(fd uintptr) bool {
		n, rerr = b.Recv(fd)
		return rerr != unix.EAGAIN
	}); err != nil || rerr != nil {
		t.Fatal(err, rerr)
	}
	return n
}

// BenchmarkRecv: bursts of 64-byte datagrams over loopback (one sendmmsg
// each), read as a pipe reads them: a batch taken when the socket is
// readable and put back when the burst has been read. One op is one
// datagram.
func BenchmarkRecv(b *testing.B) {
	for _, burst := range []int{1, 32} {
		for _, slot := range []int{2048, MaxSlot} {
			b.Run(fmt.Sprintf("burst=%d/slot=%d", burst, slot), func(b *testing.B) {
				benchRecv(b, burst, slot)
			})
		}
	}
}

// BenchmarkRecvParallel is BenchmarkRecv with one datagram per batch, on
// one socket pair per goroutine: the pool shared by all.
func BenchmarkRecvParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := newBenchRecv(b, 2048)
		defer r.close()
		for pb.Next() {
			r.round(b, 1)
		}
	})
}

func benchRecv(b *testing.B, burst, slot int) {
	r := newBenchRecv(b, slot)
	defer r.close()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%burst == 0 {
			r.round(b, burst)
		}
	}
}

type benchRecvState struct {
	rx, tx *net.UDPConn
	rc     interface {
		Read(func(uintptr) bool) error
	}
	to  netip.AddrPort
	q   *SendBatch
	wrc interface {
		Write(func(uintptr) bool) error
	}
	write func(fd uintptr) bool
	serr  error
	slot  int
	msg   []byte
	cur   *RecvBatch
	n     int
	rerr  error
	read  func(fd uintptr) bool
	sum   int
}

func newBenchRecv(b *testing.B, slot int) *benchRecvState {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Skip("no IPv4 loopback:", err)
	}
	tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	rc, err := rx.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	r := &benchRecvState{rx: rx, tx: tx, rc: rc, slot: slot, msg: make([]byte, 64),
		to: rx.LocalAddr().(*net.UDPAddr).AddrPort(), q: NewSendBatch(32, unix.AF_INET)}
	if r.wrc, err = tx.SyscallConn(); err != nil {
		b.Fatal(err)
	}
	r.write = func(fd uintptr) bool {
		r.serr = r.q.Send(fd)
		return r.serr != unix.EAGAIN
	}
	r.read = func(fd uintptr) bool {
		if r.cur == nil {
			r.cur = GetRecv(32, r.slot, false)
		}
		r.n, r.rerr = r.cur.Recv(fd)
		return r.rerr != unix.EAGAIN
	}
	return r
}

func (r *benchRecvState) close() { r.rx.Close(); r.tx.Close() }

// round sends burst datagrams and reads them.
func (r *benchRecvState) round(b *testing.B, burst int) {
	for range burst {
		r.q.Add(r.msg, r.to, 0)
	}
	for r.q.Pending() > 0 {
		if err := r.wrc.Write(r.write); err != nil || r.serr != nil {
			b.Fatal(err, r.serr)
		}
	}
	for got := 0; got < burst; {
		if err := r.rc.Read(r.read); err != nil || r.rerr != nil {
			b.Fatal(err, r.rerr)
		}
		for i := range r.n {
			m, _, _, _ := r.cur.Msg(i)
			r.sum += len(m)
		}
		got += r.n
	}
	PutRecv(r.cur) // the socket is drained: the pipe would put it back now
	r.cur = nil
}

// BenchmarkGetPut: the pool alone, as a pipe uses it once per wakeup.
func BenchmarkGetPut(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		x := GetRecv(32, 2048, false)
		PutRecv(x)
	}
}

// BenchmarkGetPutParallel: the pool taken and given back from every P.
func BenchmarkGetPutParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			x := GetRecv(32, 2048, false)
			PutRecv(x)
		}
	})
}
