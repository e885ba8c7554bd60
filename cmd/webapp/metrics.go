package main

import (
	"net/http"
	"net/http/pprof"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-dev/baton"
)

// metrics are webapp's Prometheus metrics, served with the profiler on
// the metrics socket only (never on a public one). The reload counts are
// the service's, over all its generations (baton carries them across
// hand-overs); the others count from this process's start, as Prometheus
// counters do.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec

	generation, reloads, failedReloads atomic.Int64
	drains, cut                        atomic.Int64
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "webapp_http_requests_total", Help: "HTTP requests answered by this process, by socket.",
	}, []string{"socket"})
	reloads := prometheus.NewDesc("webapp_reloads_total", "Reloads of the service over all its generations, by outcome.", []string{"outcome"}, nil)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "webapp_generation", Help: "This generation's number: 1 at start, one more with each reload."},
			func() float64 { return float64(m.generation.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "webapp_drains_total", Help: "Drains this process began (at a stop or after a hand-over)."},
			func() float64 { return float64(m.drains.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "webapp_cut_connections_total", Help: "Connections this process cut at a drain's deadline."},
			func() float64 { return float64(m.cut.Load()) }),
		collectorFunc{desc: reloads, collect: func(ch chan<- prometheus.Metric) {
			ch <- prometheus.MustNewConstMetric(reloads, prometheus.CounterValue, float64(m.reloads.Load()), "ok")
			ch <- prometheus.MustNewConstMetric(reloads, prometheus.CounterValue, float64(m.failedReloads.Load()), "failed")
		}},
	)
	return m
}

// event updates the metrics from one of baton's events.
func (m *metrics) event(e baton.Event) {
	m.generation.Store(int64(e.Generation))
	m.reloads.Store(int64(e.Reloads))
	m.failedReloads.Store(int64(e.FailedReloads))
	switch e.Kind {
	case baton.EventDrainStarted:
		m.drains.Add(1)
	case baton.EventDrainFinished:
		m.cut.Add(int64(e.Cut))
	}
}

// count wraps h so that its requests are counted under socket.
func (m *metrics) count(socket string, h http.Handler) http.Handler {
	c := m.requests.WithLabelValues(socket)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.Inc()
		h.ServeHTTP(w, r)
	})
}

// handler serves /metrics and the profiler (/debug/pprof/).
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// collectorFunc is a collector of one description whose values are read
// when scraped.
type collectorFunc struct {
	desc    *prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
