package baton

import (
	"net/http"
	"sync/atomic"
)

// Readiness says whether the service wants new work: what a load
// balancer's health check or a Kubernetes readiness probe asks, as
// opposed to liveness (whether the process works at all). Pass it in
// Options.Readiness and serve its Handler on a path such as /readyz.
//
// Run makes it ready once the servers serve, and not ready the moment
// its context ends (a stop), Options.ShutdownDelay before the servers
// stop accepting, so that balancers take the instance out while it still
// answers. A hand-over to a new generation (a reload) leaves it ready:
// the service as a whole keeps serving, and the new generation's
// Readiness is ready from its first connection.
//
// Readiness is not a health check: do not name its path in
// Options.HealthPath, which must answer 2xx before Run serves (and so
// before Readiness is ready) and during the shutdown delay.
//
// The zero value is not ready. A Readiness serves one Run at a time and
// must not be copied.
type Readiness struct {
	state atomic.Int32
}

const (
	readyStarting int32 = iota
	readyServing
	readyStopping
)

// Ready reports whether the service is serving and not stopping.
func (r *Readiness) Ready() bool { return r.state.Load() == readyServing }

// Handler answers 200 "ready" while Ready, and 503 "starting" or
// "stopping" otherwise, never cached.
func (r *Readiness) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch r.state.Load() {
		case readyServing:
			w.Write([]byte("ready\n"))
		case readyStopping:
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("stopping\n"))
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("starting\n"))
		}
	})
}

// set is nil-safe: Run tracks no readiness without Options.Readiness.
func (r *Readiness) set(state int32) {
	if r != nil {
		r.state.Store(state)
	}
}
