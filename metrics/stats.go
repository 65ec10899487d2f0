package metrics

import "github.com/p2pd/p2pd"

// stat is a field of p2pd.PipeStats, exported as a metric.
type stat struct {
	name    string // the field's name in snake_case
	help    string // the field's doc comment
	counter bool   // false: a gauge (a value now)
	value   func(p2pd.PipeStats) float64
}

// stats are every numeric field of p2pd.PipeStats (stats_test.go checks it),
// with the help of their doc comments.
var stats = []stat{
	{"conns", "TCP server: connections open now.", false,
		func(s p2pd.PipeStats) float64 { return float64(s.Conns) }},
	{"accepted", "TCP server: connections accepted and served.", true,
		func(s p2pd.PipeStats) float64 { return float64(s.Accepted) }},
	{"rejected", "TCP server: connections closed at once over MaxConns (the listener's or the daemon's).", true,
		func(s p2pd.PipeStats) float64 { return float64(s.Rejected) }},
	{"evicted", "TCP server: silent connections closed to make room for new ones (ErrEvicted).", true,
		func(s p2pd.PipeStats) float64 { return float64(s.Evicted) }},
	{"write_timeouts", "TCP: connections closed because the peer did not take a Send (ErrWriteTimeout).", true,
		func(s p2pd.PipeStats) float64 { return float64(s.WriteTimeouts) }},
	{"unhandled", "Messages that no MsgCB, subscription or link took.", true,
		func(s p2pd.PipeStats) float64 { return float64(s.Unhandled) }},
	{"shutdown_dropped", "UDP: datagrams read in a batch but not handed to the callback because the listener was shutting down.", true,
		func(s p2pd.PipeStats) float64 { return float64(s.ShutdownDropped) }},
	{"accept_errors", "TCP server: failed accepts retried after a backoff (out of descriptors, ...).", true,
		func(s p2pd.PipeStats) float64 { return float64(s.AcceptErrors) }},
	{"not_queued", "TCP server: served connections that Accept's full queue did not keep.", true,
		func(s p2pd.PipeStats) float64 { return float64(s.NotQueued) }},
	{"recv_dropped", "UDP: datagrams the system dropped for a full receive buffer (Linux; 0 elsewhere).", true,
		func(s p2pd.PipeStats) float64 { return float64(s.RecvDropped) }},
	{"send_dropped", "UDP: queued replies the system refused.", true,
		func(s p2pd.PipeStats) float64 { return float64(s.SendDropped) }},
	{"sub_dropped", "Messages that full subscription queues dropped.", true,
		func(s p2pd.PipeStats) float64 { return float64(s.SubDropped) }},
	{"panics", "Callbacks that panicked (recovered).", true,
		func(s p2pd.PipeStats) float64 { return float64(s.Panics) }},
	{"over_budget", "TCP: connections closed for partial frames over MaxBuffered (ErrOverBudget).", true,
		func(s p2pd.PipeStats) float64 { return float64(s.OverBudget) }},
}
