// Command plainhttp is the benchmark's baseline: a plain net/http server
// with webapp's handler that owns its listener. On SIGTERM or SIGINT it
// calls http.Server.Shutdown and exits, so restarting it means stopping it
// and starting it again, which binds the address anew.
//
//	plainhttp --listen 127.0.0.1:8080 [--version V]
//	plainhttp --listen ADDR --h2c --listen-https ADDR --tls-cert F --tls-key F --listen-grpc ADDR --listen-udp ADDR
//
// The second form is webapp's four servers without baton: the same
// handler and http.Server settings (h2c on the http socket), TLS with the
// same handler, a grpc.Server with the same services (health, reflection,
// webapp.v1.Ticker) and the same UDP echo, each on its own listener and
// served by its library directly.
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
	h2c := fs.Bool("h2c", false, "speak h2c beside HTTP/1.1 on --listen, as webapp does")
	var others servers
	fs.StringVar(&others.https, "listen-https", "", "`address` of a TLS server with the same handler (needs --tls-cert, --tls-key)")
	fs.StringVar(&others.cert, "tls-cert", "", "certificate `file` for --listen-https")
	fs.StringVar(&others.key, "tls-key", "", "key `file` for --listen-https")
	fs.StringVar(&others.grpc, "listen-grpc", "", "`address` of a gRPC server with webapp's services")
	fs.StringVar(&others.udp, "listen-udp", "", "`address` of webapp's UDP echo")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	handler := hello.New(*version, 0)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: hello.ReadHeaderTimeout,
		IdleTimeout:       hello.IdleTimeout,
	}
	if *h2c {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stopOthers, err := others.start(handler, served)
	if err != nil {
		srv.Close()
		return err
	}
	defer stopOthers()
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
