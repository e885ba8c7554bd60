package baton_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baton-dev/baton"
)

// A service behind a load balancer that health-checks GET /readyz every
// 500 ms and takes a server out after 3 failures: on SIGTERM /readyz
// turns 503 at once, the service keeps accepting and serving for 2 s
// (1.5 s for the balancer, plus a margin), then drains within 20 s. The
// unit's TimeoutStopSec= (or the pod's terminationGracePeriodSeconds)
// must exceed the 22 s. GET /healthz stays 200: liveness is another
// question.
func ExampleReadiness() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	var ready baton.Readiness
	mux := http.NewServeMux()
	mux.Handle("GET /readyz", ready.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello world\n") })

	err := baton.Serve(ctx, &http.Server{Handler: mux}, baton.Options{
		Readiness:     &ready,
		ShutdownDelay: 2 * time.Second,
		DrainTimeout:  20 * time.Second,
		HealthPath:    "/healthz",
	})
	if err != nil {
		log.Fatal(err)
	}
}
