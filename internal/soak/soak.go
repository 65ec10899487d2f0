//go:build linux

package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p2pd/p2pd"
)

// Phases, in the order they are reported.
var Phases = []string{"load", "churn", "addr", "flood", "slow", "panic"}

// Config is one run.
type Config struct {
	Dur       time.Duration // how long the phases run once the load connections are up
	Conns     int           // load connections held
	Listeners int           // load listeners: ports PortBase..PortBase+Listeners-1
	PortBase  uint16
	Interval  time.Duration // between two messages of one load connection
	Only      []string      // phases to run; empty: all
	Netns     bool          // in the namespace SetupNetns built (else loopback only)
	Logger    *slog.Logger  // the daemons' logs; nil: discarded
	// ClientCmd, if set, makes the command of a helper process that runs
	// the load clients (see ClientMain); nil: they run in this process.
	ClientCmd func(args ...string) *exec.Cmd
	Progress  io.Writer // progress lines; nil: none
}

// Workers per phase.
const (
	churnWorkers     = 16
	churnMsgs        = 5
	slowWorkers      = 8
	misbehaveWorkers = 2
)

// soakRun is the state of one Run.
type soakRun struct {
	cfg  Config
	fig  *Figures
	load *p2pd.Daemon
	edge *p2pd.Daemon

	loadMsgs       atomic.Uint64 // messages the load daemon's callback got
	loadServerErrs atomic.Int64
	idleTimeouts   atomic.Int64
	readTimeouts   atomic.Int64
	serverErr      firstErr // the load daemon's
	edgeErr        firstErr
}

func (r *soakRun) logf(format string, a ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "soak: "+format+"\n", a...)
	}
}

// Run runs the soak and returns its figures; Figures.Failures lists the
// checks that failed. The error reports a run that could not be set up.
func Run(cfg Config) (*Figures, error) {
	t0 := time.Now()
	r := &soakRun{cfg: cfg, fig: &Figures{Mode: "loopback", Listeners: cfg.Listeners, ConnsTarget: cfg.Conns}}
	f := r.fig
	if cfg.Netns {
		f.Mode = "netns"
	}
	for _, p := range Phases {
		if len(cfg.Only) == 0 || slices.Contains(cfg.Only, p) {
			f.Phases = append(f.Phases, p)
		}
	}
	if !f.ran("load") {
		f.ConnsTarget = 0
	}
	if cfg.Listeners < 1 || int(cfg.PortBase)+cfg.Listeners > 65536 || cfg.Interval <= 0 {
		return nil, fmt.Errorf("soak: bad config: %d listeners from port %d, interval %v", cfg.Listeners, cfg.PortBase, cfg.Interval)
	}
	f.GoroutineStart, f.FDStart, f.HeapStart, f.RSSStart = runtime.NumGoroutine(), openFDs(), settledHeap(), rss()
	// The server's end of every connection, and the client's unless a
	// helper process holds it.
	ends := 2
	if cfg.ClientCmd != nil {
		ends = 1
	}
	if err := raiseNoFile(uint64(ends*f.ConnsTarget + 4*churnWorkers + 1024)); err != nil {
		return nil, err
	}
	err := r.run()
	if cerr := r.closeDaemons(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	r.settle()
	f.TotalSec = time.Since(t0).Seconds()
	f.check()
	if len(f.Failures) > 0 && cfg.Netns {
		r.netstat()
	}
	return f, nil
}

// netstat prints the namespace's non-zero TCP and UDP drop and overflow
// counters, to explain a failure.
func (r *soakRun) netstat() {
	out, err := exec.Command("nstat", "-az").Output()
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if os.Getenv("SOAK_NSTAT") != "" && len(f) >= 2 && f[1] != "0" {
			r.logf("nstat: %s %s", f[0], f[1])
			continue
		}
		if len(f) >= 2 && f[1] != "0" &&
			(strings.Contains(f[0], "Drop") || strings.Contains(f[0], "Overflow") || strings.Contains(f[0], "Retrans") ||
				strings.Contains(f[0], "Reset") || strings.Contains(f[0], "Abort") || strings.Contains(f[0], "Errors")) {
			r.logf("nstat: %s %s", f[0], f[1])
		}
	}
}

// run opens the daemons, runs the phases and stops them.
func (r *soakRun) run() error {
	cfg, f := r.cfg, r.fig
	ctx := context.Background()
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	route, err := r.route()
	if err != nil {
		return err
	}
	ac := newAddrChurn()
	r.load = &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(r.echo),

		OnEnd:  r.loadEnded,
		Logger: logger, Framing: p2pd.FrameLength32}, WatchInterval: WatchInterval,
		OnEvent: ac.onEvent,
	}
	r.edge = &p2pd.Daemon{PipeConfig: p2pd.PipeConfig{OnMsg: p2pd.MsgCallbackFunc(edgeCB),

		OnEnd:  r.edgeEnded,
		Logger: logger, Framing: p2pd.FrameLength32,
		IdleTimeout: EdgeIdleTimeout, ReadTimeout: EdgeReadTimeout},
	}
	ports := p2pd.Ports{{Start: cfg.PortBase, End: cfg.PortBase + uint16(cfg.Listeners-1)}}
	lps, err := r.load.ListenAll(ctx, []p2pd.Target{route}, ports, []p2pd.Proto{p2pd.TCP}, p2pd.IPv4)
	if err != nil {
		return err
	}
	addrs := make([]netip.AddrPort, len(lps))
	for i, p := range lps {
		addrs[i] = p.LocalAddr()
	}
	bound, err := route.BindIP(route.Addr(), 0)
	if err != nil {
		return err
	}
	eps, err := r.edge.ListenSpecific(ctx, []p2pd.Specific{{Route: bound, Proto: p2pd.TCP}, {Route: bound, Proto: p2pd.UDP}})
	if err != nil {
		return err
	}
	edgeTCP, edgeUDP := eps[0], eps[1]
	if f.ran("addr") {
		if !cfg.Netns {
			f.AddrSkipped = "needs root (a network namespace)"
			f.Phases = slices.DeleteFunc(f.Phases, func(p string) bool { return p == "addr" })
		} else if ac.tcp, ac.udp, err = r.secondary(ctx); err != nil {
			return err
		}
	}
	r.logf("%s: %d load listeners from %v, edge %v and %v", f.Mode, len(lps), addrs[0], edgeTCP.LocalAddr(), edgeUDP.LocalAddr())

	// a. Load: connect everything, then measure.
	var lc loadClients = &load{addrs: addrs, n: f.ConnsTarget, interval: cfg.Interval}
	f.MemScope = "both ends"
	if cfg.ClientCmd != nil && f.ConnsTarget > 0 {
		lc = newLoadProc(cfg.ClientCmd, addrs, f.ConnsTarget, cfg.Interval)
		f.MemScope = "server"
	}
	m0, rss0 := heapStack(), rss()
	t := time.Now()
	rep, err := lc.connect(ctx)
	if err != nil {
		return err
	}
	f.ConnectSec = time.Since(t).Seconds()
	if rep.Connected > 0 {
		f.HeapPerConn = float64(heapStack()-m0) / float64(rep.Connected)
		f.RSSPerConn = float64(rss()-rss0) / float64(rep.Connected)
	}
	st := r.load.Stats()
	f.ConnsHeld = st.Conns
	r.logf("load: %d connections held (daemon: %d) in %.1f s; %.0f B heap+stack, %.0f B RSS per connection (%s)",
		rep.Connected, st.Conns, f.ConnectSec, f.HeapPerConn, f.RSSPerConn, f.MemScope)
	if f.ran("load") || f.ran("churn") {
		ac.loadMsgs = r.loadMsgs.Load
	}

	// b-f, concurrently, for cfg.Dur. The context is cancelled rather
	// than given a deadline: dials would take the deadline as theirs and
	// could fail with a timeout just before ctx.Err() tells why.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopTimer := time.AfterFunc(cfg.Dur, cancel)
	defer stopTimer.Stop()
	var wg sync.WaitGroup
	var sched atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		schedDelay(pctx, &sched)
	}()
	ch := &churn{addrs: addrs, workers: churnWorkers, msgs: churnMsgs}
	fl := &flood{ln: edgeUDP}
	sl := &slow{to: edgeTCP.LocalAddr(), workers: slowWorkers}
	mb := &misbehave{to: edgeTCP.LocalAddr(), workers: misbehaveWorkers}
	start := time.Now()
	for _, p := range f.Phases {
		switch p {
		case "churn":
			ch.run(pctx, &wg)
		case "addr":
			ac.run(pctx, &wg)
		case "flood":
			fl.run(pctx, &wg)
		case "slow":
			sl.run(pctx, &wg)
		case "panic":
			mb.run(pctx, &wg)
		}
	}
	<-pctx.Done()
	f.DurationSec = time.Since(start).Seconds()
	r.logf("stopping")
	if !within(30*time.Second, wg.Wait) {
		return errors.New("soak: the phases did not stop within 30 s")
	}
	rep, err = lc.stop()
	if err != nil {
		return err
	}

	var all tally
	for _, t := range []*tally{&ch.t, &sl.normal, &mb.t} {
		all.add(t)
	}
	f.TCPSent = all.sent.Load() + rep.Sent
	f.TCPAcked = all.acked.Load() + rep.Acked
	f.TCPVerified = all.verified.Load() + rep.Verified
	f.TCPCorrupt = all.corrupt.Load() + rep.Corrupt
	f.LoadMsgs, f.LoadDialErrors, f.LoadDropped = rep.Acked, rep.DialErrors, rep.ConnErrors
	st = r.load.Stats()
	f.LoadAccepted, f.LoadRejected = st.Accepted, st.Rejected
	f.ChurnConns, f.ChurnErrors = ch.conns.Load(), ch.errs.Load()
	f.AddrCycles, f.EventsFailed, f.EventsRestored = ac.cycles.Load(), ac.failed.Load(), ac.restored.Load()
	f.EventsMissing, f.EventsUnexpected, f.AddrStalls = ac.missing.Load(), ac.unexpected.Load(), ac.stalls.Load()
	f.AddrGapRefused, f.AddrRestoreOK = ac.gapRefused.Load(), ac.restoreOK.Load()
	f.FloodRounds, f.FloodSent, f.FloodAnswered = fl.rounds.Load(), fl.sent.Load(), fl.answered.Load()
	if f.ran("flood") {
		f.FloodDropped = fl.dropped()
	}
	f.FloodHeapGrowth, f.FloodRSSGrowth = fl.heapGrowth.Load(), fl.rssGrowth.Load()
	f.FloodRecoveryMs, f.FloodNotRecovered = ms(fl.recoveryMax.Load()), fl.notRecovered.Load()
	f.SlowOpened, f.SlowClosed, f.SlowNotClosed = sl.opened.Load(), sl.closed.Load(), sl.notClosed.Load()
	f.SlowSilentMs = [2]float64{ms(sl.silentMin.Load()), ms(sl.silentMax.Load())}
	f.SlowTrickleMs = [2]float64{ms(sl.trickMin.Load()), ms(sl.trickMax.Load())}
	f.EdgeMsgs, f.EdgeErrors, f.EdgeLatencyMaxMs = sl.normal.acked.Load(), sl.normalErrs.Load(), ms(sl.latencyMax.Load())
	f.SchedDelayMaxMs = ms(sched.Load())
	f.PanicsSent, f.PanicsCounted = mb.panicsSent.Load(), r.edge.Stats().Panics
	f.BlocksSent, f.BlocksOK, f.MisbehaveErrors = mb.blocksSent.Load(), mb.blocksOK.Load(), mb.errs.Load()
	if rep.Err != "" {
		f.Errors = append(f.Errors, rep.Err)
	}
	for _, e := range []*firstErr{&ch.err, &ac.err, &fl.err, &sl.err, &mb.err, &r.serverErr, &r.edgeErr} {
		if s := e.get(); s != "" {
			f.Errors = append(f.Errors, s)
		}
	}
	return nil
}

// route returns the route the daemons serve: the primary address of
// IfName in the namespace, 127.0.0.1 on loopback.
func (r *soakRun) route() (p2pd.Route, error) {
	name, ip := "lo", netip.MustParseAddr("127.0.0.1")
	if r.cfg.Netns {
		name, ip = IfName, primaryAddr
	}
	ifc, err := p2pd.InterfaceByName(name)
	if err != nil {
		return p2pd.Route{}, err
	}
	if rt, ok := ifc.Routes4.Locate(ip); ok {
		return rt, nil
	}
	if r.cfg.Netns {
		return p2pd.Route{}, fmt.Errorf("soak: %v is on no IPv4 route of %s: %v", ip, name, ifc.Routes4)
	}
	// Loopback is not always listed as a route: make one.
	return p2pd.Route{Family: p2pd.IPv4, Interface: name, NIC: []netip.Addr{ip}}, nil
}

// secondary adds the secondary address and opens the load daemon's TCP
// and UDP listeners on it.
func (r *soakRun) secondary(ctx context.Context) (tcp, udp *p2pd.Pipe, err error) {
	if err := ip("addr", "add", secondary, "dev", IfName); err != nil {
		return nil, nil, err
	}
	ifc, err := p2pd.InterfaceByName(IfName)
	if err != nil {
		return nil, nil, err
	}
	rt, ok := ifc.Routes4.Locate(secondaryAddr)
	if !ok {
		return nil, nil, fmt.Errorf("soak: %v is on no route of %s", secondaryAddr, IfName)
	}
	if rt, err = rt.BindIP(secondaryAddr, 0); err != nil {
		return nil, nil, err
	}
	if tcp, err = r.load.AddListener(ctx, p2pd.TCP, rt); err != nil {
		return nil, nil, err
	}
	if udp, err = r.load.AddListener(ctx, p2pd.UDP, rt); err != nil {
		return nil, nil, err
	}
	return tcp, udp, nil
}

// closeDaemons closes both daemons, each bounded in time.
func (r *soakRun) closeDaemons() error {
	t := time.Now()
	for _, d := range []*p2pd.Daemon{r.load, r.edge} {
		if d == nil {
			continue
		}
		if !within(15*time.Second, func() { d.Close() }) {
			return errors.New("soak: Daemon.Close did not return within 15 s")
		}
	}
	r.fig.CloseSec = time.Since(t).Seconds()
	r.fig.LoadServerErrors = r.loadServerErrs.Load()
	r.fig.ServerIdleTimeouts, r.fig.ServerReadTimeouts = r.idleTimeouts.Load(), r.readTimeouts.Load()
	return nil
}

// settle waits up to 5 s for the goroutines to end, then takes the end
// figures.
func (r *soakRun) settle() {
	f := r.fig
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if runtime.NumGoroutine() <= f.GoroutineStart+endGoroutineSlack && openFDs() <= f.FDStart+endFDSlack {
			break
		}
	}
	f.GoroutineEnd, f.FDEnd, f.HeapEnd, f.RSSEnd = runtime.NumGoroutine(), openFDs(), settledHeap(), rss()
}

// echo is the load daemon's callback.
func (r *soakRun) echo(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
	r.loadMsgs.Add(1)
	p.Send(msg, from)
}

// edgeCB is the edge daemon's callback: it misbehaves as the message's
// kind asks, then echoes.
func edgeCB(msg []byte, from p2pd.Peer, p *p2pd.Pipe) {
	if len(msg) > 0 {
		switch msg[0] {
		case kindPanic:
			panic("soak: a callback panics")
		case kindBlock:
			time.Sleep(blockFor)
		case kindFlood:
			time.Sleep(floodDelay)
		}
	}
	p.Send(msg, from)
}

// loadEnded counts load connections that ended for another reason than
// the client's close (EOF) or the daemon's (nil).
func (r *soakRun) loadEnded(p *p2pd.Pipe, reason error) {
	if reason != nil && !errors.Is(reason, io.EOF) {
		r.loadServerErrs.Add(1)
		r.serverErr.set("load daemon: pipe %v<-%v ended: %v", p.LocalAddr(), p.RemoteAddr(), reason)
	}
}

// edgeEnded counts the connections the edge daemon closed for idleness
// or slowness.
func (r *soakRun) edgeEnded(p *p2pd.Pipe, reason error) {
	switch {
	case errors.Is(reason, p2pd.ErrIdleTimeout):
		r.idleTimeouts.Add(1)
	case errors.Is(reason, p2pd.ErrReadTimeout):
		r.readTimeouts.Add(1)
	case reason != nil && !errors.Is(reason, io.EOF) && !errors.Is(reason, p2pd.ErrBadFrame):
		// A slowloris closed at the end of the run ends in a bad frame.
		r.edgeErr.set("edge daemon: pipe %v<-%v ended: %v", p.LocalAddr(), p.RemoteAddr(), reason)
	}
}

// schedDelay records in max how late a 10 ms sleep wakes up, at most,
// until ctx ends: how long a goroutine of this process may wait for a CPU.
func schedDelay(ctx context.Context, max *atomic.Int64) {
	const tick = 10 * time.Millisecond
	for {
		t := time.Now()
		if !sleepCtx(ctx, tick) {
			return
		}
		maxInt64(max, int64(time.Since(t)-tick))
	}
}

// within runs fn and reports whether it returned within d; if it did not,
// it is left running.
func within(d time.Duration, fn func()) bool {
	done := make(chan struct{})
	go func() {
		fn()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func ms(ns int64) float64 {
	if ns >= int64(time.Hour) {
		return 0 // never set
	}
	return float64(ns) / 1e6
}
