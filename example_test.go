package baton_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/baton-dev/baton"
)

// A service that takes its socket from systemd (or binds 127.0.0.1:8080),
// reports READY=1, swaps its binary on SIGHUP or `reload`, and drains on
// SIGTERM. The units it needs are described in the README.
func ExampleServe() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello world\n")
	})
	err := baton.Serve(ctx, &http.Server{Handler: mux}, baton.Options{Reload: hup})
	if err != nil {
		log.Fatal(err)
	}
}
