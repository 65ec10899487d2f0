package metrics

import (
	"strings"

	"github.com/p2pd/p2pd"
	"github.com/prometheus/client_golang/prometheus"
)

// collector reads its daemon's counters at each Collect and keeps nothing
// between calls.
type collector struct {
	d         *p2pd.Daemon
	listeners *prometheus.Desc   // p2pd_daemon_listeners
	daemon    []*prometheus.Desc // p2pd_daemon_<stat>, by stats' index
	listener  []*prometheus.Desc // p2pd_listener_<stat>[_total], by stats' index
}

// NewCollector returns a prometheus.Collector of d's counters and of each
// listener's (see the package doc for the metrics). It is safe to use while
// d runs, and after d closes (it then has no listener). A nil d is an error
// wrapping p2pd.ErrInvalid.
func NewCollector(d *p2pd.Daemon) (prometheus.Collector, error) {
	if d == nil {
		return nil, invalidError("nil Daemon")
	}
	c := &collector{
		d:         d,
		listeners: prometheus.NewDesc("p2pd_daemon_listeners", "Listeners the daemon holds now.", nil, nil),
	}
	for _, s := range stats {
		c.daemon = append(c.daemon, prometheus.NewDesc("p2pd_daemon_"+s.name,
			s.help+" Summed over the open listeners.", nil, nil))
		name := "p2pd_listener_" + s.name
		if s.counter {
			name += "_total"
		}
		c.listener = append(c.listener, prometheus.NewDesc(name, s.help, []string{"proto", "local"}, nil))
	}
	return c, nil
}

// Describe sends every Desc that Collect uses.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.listeners
	for _, d := range c.daemon {
		ch <- d
	}
	for _, d := range c.listener {
		ch <- d
	}
}

// Collect sends the daemon's sums, then each listener's counters.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ds := c.d.Stats()
	ch <- prometheus.MustNewConstMetric(c.listeners, prometheus.GaugeValue, float64(ds.Listeners))
	for i, s := range stats {
		ch <- prometheus.MustNewConstMetric(c.daemon[i], prometheus.GaugeValue, s.value(ds.PipeStats))
	}
	// A daemon has one listener per protocol and address (it refuses a
	// second with ErrAddrInUse), so the labels never repeat.
	for _, p := range c.d.Listeners() {
		proto, local := strings.ToLower(p.Proto().String()), p.LocalAddr().String()
		ps := p.Stats()
		for i, s := range stats {
			t := prometheus.GaugeValue
			if s.counter {
				t = prometheus.CounterValue
			}
			ch <- prometheus.MustNewConstMetric(c.listener[i], t, s.value(ps), proto, local)
		}
	}
}
