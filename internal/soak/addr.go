//go:build linux

package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pd/p2pd"
)

// addrChurn removes the secondary address from IfName and adds it back,
// in a loop, while the load daemon serves a TCP and a UDP listener on it.
// Each cycle expects an EventFailed then an EventRestored for both
// listeners, the primary listeners to keep serving (the load daemon's
// callback keeps getting messages) and the secondary listeners to serve
// again after.
type addrChurn struct {
	tcp, udp *p2pd.Pipe      // the listeners on the secondary address
	loadMsgs func() uint64   // messages the load daemon's callback got so far
	events   chan p2pd.Event // events of the secondary listeners

	cycles     atomic.Int64 // finished cycles (not cut by the end of the run)
	failed     atomic.Int64 // EventFailed seen for the secondary listeners (wrapping ErrAddrGone), in finished cycles
	restored   atomic.Int64 // EventRestored seen for them, in finished cycles
	missing    atomic.Int64 // events awaited in vain, in finished cycles
	unexpected atomic.Int64 // events of other listeners, or of the wrong kind
	stalls     atomic.Int64 // cycles in which the load daemon got no message
	gapRefused atomic.Int64 // dials to the removed address that failed, as they should
	restoreOK  atomic.Int64 // cycles whose secondary listeners echoed again after
	err        firstErr
}

const (
	addrUp        = time.Second            // the address stays this long between cycles
	addrDown      = 300 * time.Millisecond // and is away at least this long
	eventWait     = 3 * time.Second        // for the watcher to notice (it polls every 100 ms)
	restoreWait   = 2 * time.Second        // for the secondary listeners to echo again
	WatchInterval = 100 * time.Millisecond // the load daemon's
)

func newAddrChurn() *addrChurn { return &addrChurn{events: make(chan p2pd.Event, 64)} }

// onEvent is the load daemon's OnEvent.
func (a *addrChurn) onEvent(e p2pd.Event) {
	if e.Pipe.LocalAddr().Addr() != secondaryAddr {
		a.unexpected.Add(1)
		a.err.set("event of a listener whose address stayed: %v", e)
		return
	}
	select {
	case a.events <- e:
	default:
		a.unexpected.Add(1)
	}
}

func (a *addrChurn) run(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sleepCtx(ctx, addrUp) && a.cycle(ctx) {
		}
	}()
}

// cycle removes and re-adds the address once; false when ctx ended
// or the address could not be changed.
func (a *addrChurn) cycle(ctx context.Context) bool {
	var before uint64
	if a.loadMsgs != nil {
		before = a.loadMsgs()
	}
	n := cycleEvents{t0: time.Now()}
	if err := ip("addr", "del", secondary, "dev", IfName); err != nil {
		a.err.set("%v", err)
		return false
	}
	n.note("deleted")
	a.await(ctx, p2pd.EventFailed, &n)
	if d, err := (&net.Dialer{Timeout: 300 * time.Millisecond}).DialContext(ctx, "tcp", a.tcp.LocalAddr().String()); err == nil {
		d.Close()
		a.err.set("dial to removed address %v succeeded", a.tcp.LocalAddr())
	} else {
		a.gapRefused.Add(1)
	}
	sleepCtx(ctx, addrDown)
	// The address always comes back, also when ctx ended meanwhile.
	if err := ip("addr", "add", secondary, "dev", IfName); err != nil {
		a.err.set("%v", err)
		return false
	}
	n.note("added")
	a.await(ctx, p2pd.EventRestored, &n)
	if ctx.Err() != nil {
		return false // an unfinished cycle: not judged
	}
	a.failed.Add(n.failed)
	a.restored.Add(n.restored)
	a.missing.Add(n.missing)
	if a.loadMsgs != nil && a.loadMsgs() == before {
		a.stalls.Add(1)
		a.err.set("the load daemon got no message while the secondary address was away")
	}
	if a.serves(ctx) {
		a.restoreOK.Add(1)
	}
	a.cycles.Add(1)
	return true
}

// cycleEvents counts the events of one cycle, and traces the cycle for
// the report of an unexpected event.
type cycleEvents struct {
	failed, restored, missing int64
	t0                        time.Time
	trace                     []string
}

func (n *cycleEvents) note(format string, a ...any) {
	n.trace = append(n.trace, fmt.Sprintf("%dms ", time.Since(n.t0).Milliseconds())+fmt.Sprintf(format, a...))
}

// await waits for an event of kind for each of the two listeners.
func (a *addrChurn) await(ctx context.Context, kind p2pd.EventKind, n *cycleEvents) {
	want := map[*p2pd.Pipe]bool{a.tcp: true, a.udp: true}
	t := time.NewTimer(eventWait)
	defer t.Stop()
	for len(want) > 0 {
		select {
		case e := <-a.events:
			n.note("%v %v", e.Kind, e.Pipe.Proto())
			if e.Kind != kind || !want[e.Pipe] {
				a.unexpected.Add(1)
				a.err.set("unexpected event %v while awaiting %v; this cycle: %s", e, kind, strings.Join(n.trace, ", "))
				continue
			}
			if kind == p2pd.EventFailed {
				if !errors.Is(e.Err, p2pd.ErrAddrGone) {
					a.unexpected.Add(1)
					a.err.set("EventFailed without ErrAddrGone: %v", e)
				}
				n.failed++
			} else {
				n.restored++
			}
			delete(want, e.Pipe)
		case <-t.C:
			n.missing += int64(len(want))
			a.err.set("no %v event for %d secondary listener(s) within %v", kind, len(want), eventWait)
			return
		case <-ctx.Done():
			return
		}
	}
}

// serves checks that both secondary listeners echo again, retrying for
// restoreWait.
func (a *addrChurn) serves(ctx context.Context) bool {
	deadline := time.Now().Add(restoreWait)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if last = a.echoTCP(ctx); last == nil {
			if last = udpEcho(a.udp.LocalAddr(), 300*time.Millisecond); last == nil {
				return true
			}
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	if ctx.Err() == nil {
		a.err.set("secondary listeners do not serve %v after the address came back: %v", restoreWait, last)
	}
	return false
}

func (a *addrChurn) echoTCP(ctx context.Context) error {
	var t tally
	c, err := dialFramed(ctx, a.tcp.LocalAddr(), 0xfffffff0, &t)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.exchange(kindEcho, time.Second)
}

// udpEcho sends one datagram to addr and waits for its echo.
func udpEcho(addr netip.AddrPort, timeout time.Duration) error {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return err
	}
	defer c.Close()
	var b [msgMaxLen]byte
	m := fillMsg(b[:], kindEcho, 0xfffffff1, uint64(time.Now().UnixNano()))
	if _, err := c.Write(m); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	var in [2048]byte
	for {
		n, err := c.Read(in[:])
		if err != nil {
			return err
		}
		if string(in[:n]) == string(m) {
			return nil
		}
	}
}
