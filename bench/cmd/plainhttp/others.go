package main

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/baton-dev/baton/internal/hello"
	"github.com/baton-dev/baton/internal/ticker"
	"github.com/baton-dev/baton/internal/ticker/tickerpb"
)

// servers are the addresses of webapp's other three servers, served
// without baton.
type servers struct {
	https, cert, key string
	grpc             string
	udp              string
}

// start binds and serves the servers asked for; a server that fails
// sends its error to failed. The returned function closes them all.
func (s servers) start(handler http.Handler, failed chan<- error) (stop func(), err error) {
	var closers []func()
	stop = func() {
		for _, c := range closers {
			c()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	report := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	if s.https != "" {
		if s.cert == "" || s.key == "" {
			return nil, errors.New("--listen-https needs --tls-cert and --tls-key")
		}
		cert, err := tls.LoadX509KeyPair(s.cert, s.key)
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", s.https)
		if err != nil {
			return nil, err
		}
		srv := &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: hello.ReadHeaderTimeout,
			IdleTimeout:       hello.IdleTimeout,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		}
		closers = append(closers, func() { srv.Close() })
		go func() {
			if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
				report(err)
			}
		}()
	}
	if s.grpc != "" {
		ln, err := net.Listen("tcp", s.grpc)
		if err != nil {
			return nil, err
		}
		srv := grpc.NewServer()
		hs := health.NewServer()
		healthpb.RegisterHealthServer(srv, hs)
		tickerpb.RegisterTickerServer(srv, ticker.New())
		reflection.Register(srv)
		for _, name := range []string{"", tickerpb.Ticker_ServiceDesc.ServiceName} {
			hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
		}
		closers = append(closers, srv.Stop)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				report(err)
			}
		}()
	}
	if s.udp != "" {
		pc, err := net.ListenPacket("udp", s.udp)
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { pc.Close() })
		echo := hello.Echo()
		go func() {
			b := make([]byte, 64<<10)
			for {
				n, from, err := pc.ReadFrom(b)
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						report(err)
					}
					return
				}
				echo(pc, b[:n], from)
			}
		}()
	}
	return stop, nil
}
