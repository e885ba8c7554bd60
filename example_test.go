package baton_test

import (
	"context"
	"fmt"
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

// A service with two sockets, each its own systemd .socket unit listed in
// the service's Sockets=: the public one (FileDescriptorName=http) and an
// admin one (FileDescriptorName=admin) for health and version checks.
// Without systemd it binds 127.0.0.1:8080 and 127.0.0.1:8081. A SIGHUP
// swaps in the binary now installed without dropping a request on either
// socket; SIGTERM drains both within one deadline.
func ExampleRun_twoSockets() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	public := http.NewServeMux()
	public.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d\n", os.Getpid())
	})
	admin := http.NewServeMux()
	admin.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	admin.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "1.0.0 (pid %d)\n", os.Getpid())
	})

	err := baton.Run(ctx, baton.Options{
		Reload: hup,
		// Asked of the first HTTP server, admin, before the service (or a
		// new generation of it) takes a connection.
		HealthPath: "/healthz",
		Version:    "1.0.0",
	},
		baton.HTTP(baton.Socket{Name: "admin", Address: "127.0.0.1:8081"}, &http.Server{Handler: admin}),
		baton.HTTP(baton.Socket{Name: "http", Address: "127.0.0.1:8080"}, &http.Server{Handler: public}),
	)
	if err != nil {
		log.Fatal(err)
	}
}
