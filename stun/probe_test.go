package stun

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/p2pd/p2pd"
	pion "github.com/pion/stun/v3"
)

// udpListener opens a UDP listener on 127.0.0.1 whose callback reports
// every message it gets.
func udpListener(t *testing.T) (*p2pd.Pipe, chan []byte) {
	t.Helper()
	got := make(chan []byte, 16)
	r := p2pd.Route{Family: p2pd.IPv4, NIC: []netip.Addr{lo1}}
	p, err := p2pd.Listen(context.Background(), p2pd.UDP, r, &p2pd.PipeConfig{Logger: quietLog,
		OnMsg: p2pd.MsgCallbackFunc(func(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
			select {
			case got <- append([]byte(nil), msg...):
			default:
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		<-p.Done()
	})
	return p, got
}

// TestProbe: a probe through a listener learns the mapping of the
// listener's own port, and its answer never reaches the callback; a forged
// answer with another transaction ID is an ordinary datagram.
func TestProbe(t *testing.T) {
	srv := startFakeSTUN(t, "127.0.0.1", natTo("203.0.113.7"))
	p, got := udpListener(t)
	r := &Resolver{Timeout: 2 * time.Second, RTO: 50 * time.Millisecond}
	mapped, err := r.ProbeServer(context.Background(), p, srv.Addr)
	if want := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), p.LocalAddr().Port()); err != nil || mapped != want {
		t.Fatalf("Probe = %v, %v; want %v", mapped, err, want)
	}
	select {
	case m := <-got:
		t.Fatalf("the callback got %d bytes of the probe's answer", len(m))
	case <-time.After(100 * time.Millisecond):
	}

	// A forged answer: STUN-shaped, from the server's address, unknown ID.
	forged, err := pion.Build(pion.TransactionID, pion.BindingSuccess,
		&pion.XORMappedAddress{IP: net.IPv4(192, 0, 2, 66), Port: 4242}, pion.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.conn.WriteToUDPAddrPort(forged.Raw, p.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m) != string(forged.Raw) {
			t.Fatalf("the callback got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a forged STUN answer did not reach the callback")
	}
	if p.Stats().Panics != 0 {
		t.Fatal("a tap panicked")
	}

	// Probe asks the configured servers; two that agree give the mapping,
	// two that see different ports (a per-destination NAT) give none.
	other := startFakeSTUN(t, "127.0.0.2", natTo("203.0.113.7"))
	r.Servers = []string{srv.Addr.String(), other.Addr.String()}
	if m, err := r.Probe(context.Background(), p); err != nil || m != mapped {
		t.Fatalf("Probe = %v, %v; want %v", m, err, mapped)
	}
	liar := startFakeSTUN(t, "127.0.0.3", func(src netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), src.Port()+1)
	})
	r.Servers = []string{srv.Addr.String(), liar.Addr.String()}
	if m, err := r.Probe(context.Background(), p); !errors.Is(err, p2pd.ErrExtUnknown) {
		t.Fatalf("Probe with disagreeing servers = %v, %v", m, err)
	} else {
		t.Log(err)
	}
}

// TestProbeErrors: bad arguments, a silent server, a closed listener.
func TestProbeErrors(t *testing.T) {
	srv := startFakeSTUN(t, "127.0.0.1", nil)
	srv.silent.Store(true)
	p, _ := udpListener(t)
	r := &Resolver{Timeout: 300 * time.Millisecond, RTO: 50 * time.Millisecond}
	ctx := context.Background()
	if _, err := r.ProbeServer(ctx, nil, srv.Addr); !errors.Is(err, p2pd.ErrInvalid) {
		t.Errorf("nil pipe: %v", err)
	}
	if _, err := r.ProbeServer(ctx, p, netip.AddrPort{}); !errors.Is(err, p2pd.ErrInvalid) {
		t.Errorf("no server: %v", err)
	}
	//lint:ignore SA1012 a nil context is what is tested
	if _, err := r.ProbeServer(nil, p, srv.Addr); !errors.Is(err, p2pd.ErrInvalid) {
		t.Errorf("nil context: %v", err)
	}
	_, err := r.ProbeServer(ctx, p, srv.Addr)
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("silent server: %v", err)
	}
	t.Log(err)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.ProbeServer(cctx, p, srv.Addr); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	p.Close()
	<-p.Done()
	if _, err := r.ProbeServer(ctx, p, srv.Addr); !errors.Is(err, p2pd.ErrPipeClosed) {
		t.Errorf("closed listener: %v", err)
	}
}
