//go:build unix

package p2pd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/p2pd/p2pd/internal/socktest"
)

// TestAdopt adopts sockets in the same process: they are served with the
// daemon's callback and found by Lookup, Listeners and Stats.
func TestAdopt(t *testing.T) {
	names, addrs, files := socktest.Loopback(t)
	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	ps, err := d.Adopt(context.Background(), files)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != len(files) || d.Len() != len(files) || len(d.Listeners()) != len(files) || d.Stats().Listeners != len(files) {
		t.Fatalf("%d pipes, Len %d, Stats %+v; want %d", len(ps), d.Len(), d.Stats(), len(files))
	}
	for i, p := range ps {
		proto := TCP
		if strings.HasPrefix(names[i], "udp") {
			proto = UDP
		}
		a := addrs[i]
		if p.Proto() != proto || p.LocalAddr() != a || !p.IsServer() || p.Family() != FamilyOf(a.Addr()) {
			t.Errorf("%s: pipe %v %v", names[i], p.Proto(), p.LocalAddr())
		}
		if got := d.Lookup(FamilyOf(a.Addr()), proto, a.Port(), a.Addr()); got != p {
			t.Errorf("%s: Lookup = %v", names[i], got)
		}
		if !socktest.IsClosed(files[i]) {
			t.Errorf("%s: File not closed", names[i])
		}
	}
	socktest.CheckEcho(t, names, addrs)

	// A callback set later reaches adopted listeners too.
	var mu sync.Mutex
	seen := 0
	d.SetOnMsg(MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		mu.Lock()
		seen++
		mu.Unlock()
		p.Send(msg, from)
	}))
	socktest.CheckEcho(t, names, addrs)
	mu.Lock()
	if seen != len(addrs) {
		t.Errorf("SetOnMsg: new callback saw %d messages, want %d", seen, len(addrs))
	}
	mu.Unlock()

	// A listener closed by its owner leaves the daemon.
	ps[0].Close()
	<-ps[0].Done() // Close does not wait
	if d.Len() != len(ps)-1 {
		t.Errorf("after closing one: Len %d", d.Len())
	}
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d.Len() != 0 {
		t.Fatal("listeners left after Shutdown")
	}
}

// TestAdoptMsgCB: a per-call callback serves the adopted sockets, and a
// later SetOnMsg leaves them alone.
func TestAdoptMsgCB(t *testing.T) {
	names, addrs, files := socktest.Loopback(t)
	var mu sync.Mutex
	seen := 0
	own := MsgCallbackFunc(func(msg []byte, from Peer, p *Pipe) {
		mu.Lock()
		seen++
		mu.Unlock()
		p.Send(msg, from)
	})
	d := &Daemon{}
	defer d.Close()
	if _, err := d.Adopt(context.Background(), files, MsgCB(own)); err != nil {
		t.Fatal(err)
	}
	d.SetOnMsg(MsgCallbackFunc(func([]byte, Peer, *Pipe) { t.Error("the daemon's callback got a message") }))
	socktest.CheckEcho(t, names, addrs)
	mu.Lock()
	defer mu.Unlock()
	if seen != len(addrs) {
		t.Errorf("per-call callback saw %d messages, want %d", seen, len(addrs))
	}
}

// TestAdoptAllOrNothing: a socket the daemon cannot serve, or one that
// conflicts with a listener it has, fails the call, and every socket passed
// is closed (the ports are free again).
func TestAdoptAllOrNothing(t *testing.T) {
	names, addrs, files := socktest.Loopback(t)
	// A Unix socket among them.
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	uf, err := ul.(*net.UnixListener).File()
	ul.Close()
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, socktest.Named(t, uf, "unix"))

	d := &Daemon{PipeConfig: PipeConfig{OnMsg: echoCB}}
	defer d.Close()
	ps, err := d.Adopt(context.Background(), files)
	var se *AdoptError
	if ps != nil || !errors.Is(err, ErrSocketUnsupported) || !errors.As(err, &se) || se.Name != "unix" || !strings.Contains(se.Kind, "unix") || se.FD < 0 {
		t.Fatalf("Adopt = %v, %v", ps, err)
	}
	t.Log(err)
	if d.Len() != 0 {
		t.Fatalf("%d listeners after a failed Adopt", d.Len())
	}
	for _, f := range files {
		if !socktest.IsClosed(f) {
			t.Errorf("%s: File not closed", f.Name())
		}
	}
	socktest.CheckFree(t, names, addrs)

	// The daemon already listens on the address: ErrAddrInUse, nothing adopted.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf2, _ := l.(*net.TCPListener).File()
	lf3, _ := l.(*net.TCPListener).File()
	l.Close()
	if _, err := d.Adopt(context.Background(), []*os.File{socktest.Named(t, lf2, "a")}); err != nil {
		t.Fatal(err)
	}
	_, err = d.Adopt(context.Background(), []*os.File{socktest.Named(t, lf3, "b")})
	if !errors.Is(err, ErrAddrInUse) || !errors.As(err, &se) || se.Name != "b" || d.Len() != 1 {
		t.Fatalf("second Adopt of one address: %v (Len %d)", err, d.Len())
	}
	// MaxListeners applies.
	d.MaxListeners = 1
	_, addrs2, files2 := socktest.Loopback(t)
	_, err = d.Adopt(context.Background(), files2[:1])
	var le *LimitError
	if !errors.As(err, &le) || d.Len() != 1 {
		t.Fatalf("over MaxListeners: %v", err)
	}
	socktest.CheckFree(t, []string{"tcp4"}, addrs2[:1])
	// Bad arguments: nothing, nil files, a nil context.
	if _, err := d.Adopt(context.Background(), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Adopt(nil) = %v", err)
	}
	if _, err := d.Adopt(context.Background(), []*os.File{nil}); !errors.Is(err, ErrInvalid) || !errors.As(err, &se) {
		t.Fatalf("Adopt([nil]) = %v", err)
	}
	//lint:ignore SA1012 a nil context is what is tested
	if _, err := d.Adopt(nil, files2[1:2]); !errors.Is(err, ErrInvalid) || !socktest.IsClosed(files2[1]) {
		t.Fatalf("Adopt with a nil context: %v", err)
	}
	d.Close()
	_, _, files3 := socktest.Loopback(t)
	if _, err := d.Adopt(context.Background(), files3[:1]); !errors.Is(err, ErrDaemonClosed) {
		t.Fatalf("Adopt after Close: %v", err)
	}
	if !socktest.IsClosed(files3[0]) {
		t.Fatal("Adopt after Close left its File open")
	}
}
