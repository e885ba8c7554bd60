// Command plainhttp is the benchmark's baseline: a plain net/http server
// with webapp's handler that owns its listener. On SIGTERM or SIGINT it
// calls http.Server.Shutdown and exits, so restarting it means stopping it
// and starting it again, which binds the address anew.
//
//	plainhttp --listen 127.0.0.1:8080 [--version V]
//
// It prints "ready <pid>" on standard output once it listens.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baton-dev/baton/internal/hello"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "plainhttp: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("plainhttp", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to listen on")
	version := fs.String("version", "plain", "`value` of X-Webapp-Version")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "bound of Shutdown on SIGTERM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           hello.New(*version, 0),
		ReadHeaderTimeout: hello.ReadHeaderTimeout,
		IdleTimeout:       hello.IdleTimeout,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "ready %d\n", os.Getpid())

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
