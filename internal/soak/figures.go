//go:build linux

package soak

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Figures are the results of a run, printed as a table or one JSON object.
// Fields that do not apply to a run (a phase not run) stay zero.
type Figures struct {
	Mode        string   `json:"mode"` // "netns" (root, own namespace) or "loopback"
	Phases      []string `json:"phases"`
	DurationSec float64  `json:"duration_s"` // the phases' run, after the load connections are up
	TotalSec    float64  `json:"total_s"`    // the whole run

	// a. Load: connections held on one daemon.
	Listeners        int     `json:"listeners"`
	ConnsTarget      int     `json:"conns_target"`
	ConnsHeld        int     `json:"conns_held"` // the daemon's Stats().Conns once all had connected
	ConnectSec       float64 `json:"connect_s"`
	LoadAccepted     uint64  `json:"load_accepted"` // Stats().Accepted at the end (load + churn)
	LoadRejected     uint64  `json:"load_rejected"`
	LoadDialErrors   int64   `json:"load_dial_errors"`
	LoadDropped      int64   `json:"load_dropped"`       // connections that failed after connecting
	LoadServerErrors int64   `json:"load_server_errors"` // server ends other than EOF or Close
	LoadMsgs         uint64  `json:"load_msgs"`          // echoes the held connections got
	MemScope         string  `json:"mem_scope"`          // "server" (clients in a helper process) or "both ends"
	HeapPerConn      float64 `json:"heap_stack_per_conn_bytes"`
	RSSPerConn       float64 `json:"rss_per_conn_bytes"`

	// Every TCP message of every phase.
	TCPSent     uint64 `json:"tcp_sent"`
	TCPAcked    uint64 `json:"tcp_acked"`
	TCPVerified uint64 `json:"tcp_verified"`
	TCPCorrupt  uint64 `json:"tcp_corrupt"`

	// b. Churn.
	ChurnConns  int64 `json:"churn_conns"`
	ChurnErrors int64 `json:"churn_errors"`

	// c. Address removed and re-added.
	AddrSkipped      string `json:"addr_skipped,omitempty"`
	AddrCycles       int64  `json:"addr_cycles"`
	EventsFailed     int64  `json:"events_failed"`
	EventsRestored   int64  `json:"events_restored"`
	EventsMissing    int64  `json:"events_missing"`
	EventsUnexpected int64  `json:"events_unexpected"`
	AddrStalls       int64  `json:"addr_stalls"`      // cycles in which the load got no echo
	AddrGapRefused   int64  `json:"addr_gap_refused"` // dials to the removed address refused
	AddrRestoreOK    int64  `json:"addr_restore_ok"`  // cycles after which the secondary listeners echoed

	// d. UDP flood.
	FloodRounds       int64   `json:"flood_rounds"`
	FloodSent         uint64  `json:"flood_sent"`
	FloodAnswered     uint64  `json:"flood_answered"`
	FloodDropped      uint64  `json:"flood_dropped"` // PipeStats.RecvDropped
	FloodHeapGrowth   int64   `json:"flood_heap_growth_bytes"`
	FloodRSSGrowth    int64   `json:"flood_rss_growth_bytes"`
	FloodRecoveryMs   float64 `json:"flood_recovery_max_ms"`
	FloodNotRecovered int64   `json:"flood_not_recovered"`

	// e. Slow clients.
	SlowOpened         int64      `json:"slow_opened"`
	SlowClosed         int64      `json:"slow_closed"`
	SlowNotClosed      int64      `json:"slow_not_closed"`
	SlowSilentMs       [2]float64 `json:"slow_silent_close_ms"`  // min, max
	SlowTrickleMs      [2]float64 `json:"slow_trickle_close_ms"` // min, max, from the first byte
	ServerIdleTimeouts int64      `json:"server_idle_timeouts"`
	ServerReadTimeouts int64      `json:"server_read_timeouts"`
	EdgeMsgs           uint64     `json:"edge_msgs"` // normal clients beside them
	EdgeErrors         int64      `json:"edge_errors"`
	EdgeLatencyMaxMs   float64    `json:"edge_latency_max_ms"`

	// f. Misbehaving callbacks.
	PanicsSent      int64  `json:"panics_sent"`
	PanicsCounted   uint64 `json:"panics_counted"` // the edge daemon's Stats().Panics
	BlocksSent      int64  `json:"blocks_sent"`
	BlocksOK        int64  `json:"blocks_ok"`
	MisbehaveErrors int64  `json:"misbehave_errors"`

	// How late a 10 ms sleep of the daemons' process woke up, at most,
	// during the phases: the scheduling delay every client and callback
	// of this process can see.
	SchedDelayMaxMs float64 `json:"sched_delay_max_ms"`

	// The end.
	CloseSec       float64 `json:"close_s"` // both Daemon.Close calls
	GoroutineStart int     `json:"goroutines_start"`
	GoroutineEnd   int     `json:"goroutines_end"`
	FDStart        int     `json:"fds_start"`
	FDEnd          int     `json:"fds_end"`
	HeapStart      uint64  `json:"heap_start_bytes"`
	HeapEnd        uint64  `json:"heap_end_bytes"`
	RSSStart       int64   `json:"rss_start_bytes"`
	RSSEnd         int64   `json:"rss_end_bytes"`

	Errors   []string `json:"errors,omitempty"`   // the first error of each phase
	Failures []string `json:"failures,omitempty"` // checks that failed; empty means pass
}

// Limits of the end checks.
const (
	endGoroutineSlack = 10
	endFDSlack        = 10
	endHeapSlack      = 16 << 20
)

func (f *Figures) failf(format string, a ...any) {
	f.Failures = append(f.Failures, fmt.Sprintf(format, a...))
}

func (f *Figures) ran(phase string) bool {
	for _, p := range f.Phases {
		if p == phase {
			return true
		}
	}
	return false
}

// check fills Failures.
func (f *Figures) check() {
	if f.TCPAcked != f.TCPSent || f.TCPVerified != f.TCPAcked || f.TCPCorrupt != 0 {
		f.failf("TCP messages: %d sent, %d acked, %d verified, %d corrupt", f.TCPSent, f.TCPAcked, f.TCPVerified, f.TCPCorrupt)
	}
	if f.ran("load") {
		if f.ConnsHeld != f.ConnsTarget || f.LoadDialErrors != 0 {
			f.failf("load: %d of %d connections held, %d dial errors", f.ConnsHeld, f.ConnsTarget, f.LoadDialErrors)
		}
		if f.LoadDropped != 0 || f.LoadRejected != 0 || f.LoadServerErrors != 0 {
			f.failf("load: %d dropped, %d rejected, %d server errors", f.LoadDropped, f.LoadRejected, f.LoadServerErrors)
		}
		if f.LoadMsgs < uint64(f.ConnsTarget) {
			f.failf("load: %d echoes for %d connections", f.LoadMsgs, f.ConnsTarget)
		}
	}
	if f.ran("churn") && (f.ChurnConns == 0 || f.ChurnErrors != 0) {
		f.failf("churn: %d connections, %d errors", f.ChurnConns, f.ChurnErrors)
	}
	if f.ran("addr") {
		switch {
		case f.AddrCycles == 0:
			f.failf("addr: no complete cycle")
		case f.EventsMissing != 0 || f.EventsUnexpected != 0 || f.EventsFailed != 2*f.AddrCycles || f.EventsRestored != 2*f.AddrCycles:
			f.failf("addr: %d failed, %d restored, %d missing, %d unexpected events", f.EventsFailed, f.EventsRestored, f.EventsMissing, f.EventsUnexpected)
		case f.AddrStalls != 0 || f.AddrRestoreOK != f.AddrCycles:
			f.failf("addr: %d cycles, %d without load echoes, %d served again", f.AddrCycles, f.AddrStalls, f.AddrRestoreOK)
		}
	}
	if f.ran("flood") {
		if f.FloodRounds == 0 || f.FloodDropped == 0 || f.FloodNotRecovered != 0 {
			f.failf("flood: %d rounds, %d dropped, %d rounds not recovered", f.FloodRounds, f.FloodDropped, f.FloodNotRecovered)
		}
		if f.FloodHeapGrowth > floodHeapMax {
			f.failf("flood: heap grew by %d bytes (limit %d)", f.FloodHeapGrowth, floodHeapMax)
		}
	}
	if f.ran("slow") {
		if f.SlowClosed == 0 || f.SlowNotClosed != 0 || f.SlowClosed != f.SlowOpened {
			f.failf("slow: %d opened, %d closed by the daemon, %d not closed", f.SlowOpened, f.SlowClosed, f.SlowNotClosed)
		}
		if f.ServerIdleTimeouts+f.ServerReadTimeouts < f.SlowClosed {
			f.failf("slow: %d closed, the daemon ended %d for idleness and %d for slowness", f.SlowClosed, f.ServerIdleTimeouts, f.ServerReadTimeouts)
		}
		if f.EdgeErrors != 0 || f.EdgeMsgs == 0 {
			f.failf("slow: normal clients: %d messages, %d errors", f.EdgeMsgs, f.EdgeErrors)
		}
	}
	if f.ran("panic") {
		if f.PanicsSent == 0 || f.PanicsCounted != uint64(f.PanicsSent) || f.MisbehaveErrors != 0 || f.BlocksOK != f.BlocksSent {
			f.failf("panic: %d panics sent, %d counted; %d of %d blocks; %d errors", f.PanicsSent, f.PanicsCounted, f.BlocksOK, f.BlocksSent, f.MisbehaveErrors)
		}
	}
	if f.GoroutineEnd > f.GoroutineStart+endGoroutineSlack {
		f.failf("goroutines: %d at the start, %d at the end", f.GoroutineStart, f.GoroutineEnd)
	}
	if f.FDEnd > f.FDStart+endFDSlack {
		f.failf("fds: %d at the start, %d at the end", f.FDStart, f.FDEnd)
	}
	if f.HeapEnd > f.HeapStart+endHeapSlack {
		f.failf("heap: %d bytes at the start, %d at the end", f.HeapStart, f.HeapEnd)
	}
}

// WriteTable prints the figures for people.
func (f *Figures) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("mode", "%s, phases %v", f.Mode, f.Phases)
	row("duration", "%.1f s (total %.1f s)", f.DurationSec, f.TotalSec)
	row("conns held", "%d of %d on %d listeners (connected in %.1f s)", f.ConnsHeld, f.ConnsTarget, f.Listeners, f.ConnectSec)
	row("memory per conn", "%.0f B heap+stack, %.0f B RSS (%s)", f.HeapPerConn, f.RSSPerConn, f.MemScope)
	row("load", "%d echoes, %d dropped, %d rejected, %d server errors", f.LoadMsgs, f.LoadDropped, f.LoadRejected, f.LoadServerErrors)
	row("TCP msgs", "%d sent, %d acked, %d verified, %d corrupt", f.TCPSent, f.TCPAcked, f.TCPVerified, f.TCPCorrupt)
	row("churned conns", "%d (%d errors)", f.ChurnConns, f.ChurnErrors)
	if f.AddrSkipped != "" {
		row("address events", "skipped: %s", f.AddrSkipped)
	} else {
		row("address events", "%d cycles: %d failed, %d restored, %d missing, %d unexpected", f.AddrCycles, f.EventsFailed, f.EventsRestored, f.EventsMissing, f.EventsUnexpected)
	}
	row("UDP flood", "%d rounds: %d sent, %d dropped, %d answered", f.FloodRounds, f.FloodSent, f.FloodDropped, f.FloodAnswered)
	row("flood memory", "heap +%.1f MB, RSS +%.1f MB; echo back within %.0f ms", mb(f.FloodHeapGrowth), mb(f.FloodRSSGrowth), f.FloodRecoveryMs)
	row("slowloris", "%d closed of %d (silent %.0f-%.0f ms, trickle %.0f-%.0f ms)", f.SlowClosed, f.SlowOpened, f.SlowSilentMs[0], f.SlowSilentMs[1], f.SlowTrickleMs[0], f.SlowTrickleMs[1])
	row("edge clients", "%d msgs, %d errors, max latency %.0f ms", f.EdgeMsgs, f.EdgeErrors, f.EdgeLatencyMaxMs)
	row("panics", "%d sent, %d counted; blocks %d of %d", f.PanicsSent, f.PanicsCounted, f.BlocksOK, f.BlocksSent)
	row("scheduling delay", "%.0f ms at most", f.SchedDelayMaxMs)
	row("close", "%.2f s", f.CloseSec)
	row("goroutines", "%d -> %d", f.GoroutineStart, f.GoroutineEnd)
	row("fds", "%d -> %d", f.FDStart, f.FDEnd)
	row("heap", "%.1f MB -> %.1f MB", mb(int64(f.HeapStart)), mb(int64(f.HeapEnd)))
	row("RSS", "%.1f MB -> %.1f MB", mb(f.RSSStart), mb(f.RSSEnd))
	for _, e := range f.Errors {
		row("error", "%s", e)
	}
	if len(f.Failures) == 0 {
		row("result", "PASS")
	}
	for _, e := range f.Failures {
		row("FAIL", "%s", e)
	}
	return tw.Flush()
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
