// Package metrics exports the counters of a p2pd.Daemon to Prometheus.
//
// NewCollector reads Daemon.Stats and each listener's Pipe.Stats at every
// scrape; register it like any collector:
//
//	c, err := metrics.NewCollector(d)
//	reg.MustRegister(c)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Each listener has p2pd_listener_<field> series, labelled proto ("tcp" or
// "udp") and local (its local address, as "127.0.0.1:8080" or
// "[fe80::1%eth0]:8080"): p2pd_listener_conns is a gauge, the other fields
// counters named with "_total".
//
// The daemon has p2pd_daemon_listeners and p2pd_daemon_<field> for every
// field of PipeStats, summed over its open listeners. They are gauges, not
// counters: a listener that closes no longer counts, so a sum can drop
// (Follow closes listeners as addresses go). For rates, sum the listeners'
// counters: sum(rate(p2pd_listener_accepted_total[5m])).
package metrics
