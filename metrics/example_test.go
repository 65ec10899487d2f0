package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/p2pd/p2pd"
	"github.com/p2pd/p2pd/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func ExampleNewCollector() {
	d := new(p2pd.Daemon)
	defer d.Close()
	lo, err := p2pd.Route{Family: p2pd.IPv4}.Bind("localhost", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := d.ListenSpecific(context.Background(), []p2pd.Specific{{Route: lo, Proto: p2pd.TCP}}); err != nil {
		fmt.Println(err)
		return
	}

	reg := prometheus.NewRegistry()
	c, err := metrics.NewCollector(d)
	if err != nil {
		fmt.Println(err)
		return
	}
	reg.MustRegister(c)
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	// A scrape, without a server.
	w := httptest.NewRecorder()
	http.DefaultServeMux.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(w.Body.String()) {
		if strings.HasPrefix(line, "p2pd_daemon_listeners ") {
			fmt.Print(line)
		}
	}
	// Output:
	// p2pd_daemon_listeners 1
}
