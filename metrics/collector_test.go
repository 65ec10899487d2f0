package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// echo answers every message, and panics on "panic".
func echo(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
	if string(msg) == "panic" {
		panic("test panic")
	}
	p.Send(msg, from)
}

// open starts a daemon with cfg and the given listeners on 127.0.0.1, and
// shuts it down when the test ends.
func open(t *testing.T, cfg p2pd.PipeConfig, specs ...p2pd.Specific) (*p2pd.Daemon, []*p2pd.Pipe) {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler) // the panics are on purpose
	d := &p2pd.Daemon{PipeConfig: cfg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil && !errors.Is(err, p2pd.ErrDaemonClosed) {
			t.Errorf("Shutdown: %v", err)
		}
	})
	ps, err := d.ListenSpecific(context.Background(), specs, p2pd.MsgCB(p2pd.MsgCallbackFunc(echo)))
	if err != nil {
		t.Fatal(err)
	}
	return d, ps
}

func loopback(t *testing.T, port uint16) p2pd.Route {
	t.Helper()
	r, err := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", port)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// dial connects to p and closes the connection when the test ends.
func dial(t *testing.T, p *p2pd.Pipe) net.Conn {
	t.Helper()
	c, err := net.Dial(strings.ToLower(p.Proto().String()), p.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ping sends msg on c and waits for its echo.
func ping(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, buf[:n], err)
	}
}

// eventually retries f for up to 5 s until it returns nil.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newCollector(t *testing.T, d *p2pd.Daemon) prometheus.Collector {
	t.Helper()
	c, err := metrics.NewCollector(d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const (
	pipeFields   = 14             // numeric fields of PipeStats
	daemonSeries = 1 + pipeFields // p2pd_daemon_listeners and one per field
	perListener  = pipeFields     // series per listener
)

func TestNewCollectorNil(t *testing.T) {
	c, err := metrics.NewCollector(nil)
	if c != nil || !errors.Is(err, p2pd.ErrInvalid) {
		t.Fatalf("NewCollector(nil) = %v, %v; want nil, ErrInvalid", c, err)
	}
	if s := err.Error(); !strings.HasPrefix(s, "p2pd: metrics: ") || strings.Count(s, "p2pd: ") != 1 {
		t.Errorf("error text %q: want one \"p2pd: \", at the start", s)
	}
}

func TestCollector(t *testing.T) {
	lo := loopback(t, 0)
	d, ps := open(t, p2pd.PipeConfig{}, p2pd.Specific{Route: lo, Proto: p2pd.TCP}, p2pd.Specific{Route: lo, Proto: p2pd.UDP})
	tcp, udp := ps[0], ps[1]
	const conns, msgs = 3, 4
	for range conns {
		c := dial(t, tcp)
		for i := range msgs {
			ping(t, c, fmt.Sprint("tcp ", i))
		}
	}
	uc := dial(t, udp)
	for i := range msgs {
		ping(t, uc, fmt.Sprint("udp ", i))
	}
	if _, err := uc.Write([]byte("panic")); err != nil {
		t.Fatal(err)
	}

	c := newCollector(t, d)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	want := fmt.Sprintf(`
# HELP p2pd_daemon_listeners Listeners the daemon holds now.
# TYPE p2pd_daemon_listeners gauge
p2pd_daemon_listeners 2
# HELP p2pd_daemon_conns TCP server: connections open now. Summed over the open listeners.
# TYPE p2pd_daemon_conns gauge
p2pd_daemon_conns %[1]d
# HELP p2pd_daemon_panics Callbacks that panicked (recovered). Summed over the open listeners.
# TYPE p2pd_daemon_panics gauge
p2pd_daemon_panics 1
# HELP p2pd_listener_accepted_total TCP server: connections accepted and served.
# TYPE p2pd_listener_accepted_total counter
p2pd_listener_accepted_total{local=%[2]q,proto="tcp"} %[1]d
p2pd_listener_accepted_total{local=%[3]q,proto="udp"} 0
# HELP p2pd_listener_conns TCP server: connections open now.
# TYPE p2pd_listener_conns gauge
p2pd_listener_conns{local=%[2]q,proto="tcp"} %[1]d
p2pd_listener_conns{local=%[3]q,proto="udp"} 0
# HELP p2pd_listener_panics_total Callbacks that panicked (recovered).
# TYPE p2pd_listener_panics_total counter
p2pd_listener_panics_total{local=%[2]q,proto="tcp"} 0
p2pd_listener_panics_total{local=%[3]q,proto="udp"} 1
`, conns, tcp.LocalAddr().String(), udp.LocalAddr().String())
	eventually(t, func() error { // the panic is counted after its datagram arrives
		return testutil.GatherAndCompare(reg, strings.NewReader(want),
			"p2pd_daemon_listeners", "p2pd_daemon_conns", "p2pd_daemon_panics",
			"p2pd_listener_accepted_total", "p2pd_listener_conns", "p2pd_listener_panics_total")
	})

	if n := testutil.CollectAndCount(c); n != daemonSeries+2*perListener {
		t.Errorf("CollectAndCount = %d, want %d", n, daemonSeries+2*perListener)
	}
	if n := testutil.CollectAndCount(c, "p2pd_listener_accepted_total"); n != 2 {
		t.Errorf("p2pd_listener_accepted_total has %d series, want 2", n)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) != 0 {
		t.Errorf("CollectAndLint = %v, %v", problems, err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather: %v", err)
	}
}

// After Close the daemon has no listener: only its own series, at zero.
func TestCollectorAfterClose(t *testing.T) {
	d, _ := open(t, p2pd.PipeConfig{}, p2pd.Specific{Route: loopback(t, 0), Proto: p2pd.TCP})
	c := newCollector(t, d)
	if n := testutil.CollectAndCount(c, "p2pd_listener_conns"); n != 1 {
		t.Fatalf("before Close: %d p2pd_listener_conns series, want 1", n)
	}
	d.Close()
	if n := testutil.CollectAndCount(c); n != daemonSeries {
		t.Errorf("after Close: %d series, want %d", n, daemonSeries)
	}
	err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP p2pd_daemon_listeners Listeners the daemon holds now.
# TYPE p2pd_daemon_listeners gauge
p2pd_daemon_listeners 0
`), "p2pd_daemon_listeners")
	if err != nil {
		t.Error(err)
	}
}

// The collector's listener labels are unique because a daemon refuses a
// second listener on a protocol and address, even with ReuseAddr: two
// series with the same labels would fail the whole Gather.
func TestCollectorUniqueLabels(t *testing.T) {
	d, ps := open(t, p2pd.PipeConfig{ReuseAddr: true}, p2pd.Specific{Route: loopback(t, 0), Proto: p2pd.UDP})
	_, err := d.ListenSpecific(context.Background(),
		[]p2pd.Specific{{Route: loopback(t, ps[0].LocalAddr().Port()), Proto: p2pd.UDP}})
	if !errors.Is(err, p2pd.ErrAddrInUse) {
		t.Fatalf("second UDP listener on %v: %v, want ErrAddrInUse", ps[0].LocalAddr(), err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCollector(t, d))
	if _, err := reg.Gather(); err != nil {
		t.Error(err)
	}
}

// Scrapes run while connections come and go and the daemon closes (run
// with -race).
func TestCollectorConcurrent(t *testing.T) {
	lo := loopback(t, 0)
	d, ps := open(t, p2pd.PipeConfig{}, p2pd.Specific{Route: lo, Proto: p2pd.TCP}, p2pd.Specific{Route: lo, Proto: p2pd.UDP})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCollector(t, d))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 20 {
		c := dial(t, ps[i%2])
		ping(t, c, "x")
		c.Close()
	}
	d.Close()
	for range 10 {
		if _, err := reg.Gather(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}
