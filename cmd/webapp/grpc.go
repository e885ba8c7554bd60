package main

import (
	"context"
	"sync"

	"github.com/baton-dev/baton/internal/ticker"
	"github.com/baton-dev/baton/internal/ticker/tickerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// rpcServer is webapp's gRPC server (the socket named grpc, h2c): the
// standard grpc.health.v1.Health service, server reflection (so that
// grpcurl and ghz need no .proto), and webapp.v1.Ticker.
type rpcServer struct {
	*grpc.Server
	health   *health.Server
	ticker   *ticker.Service
	draining chan struct{}
	once     sync.Once
}

func newRPCServer() *rpcServer {
	s := &rpcServer{
		Server:   grpc.NewServer(),
		health:   health.NewServer(),
		ticker:   ticker.New(),
		draining: make(chan struct{}),
	}
	tickerpb.RegisterTickerServer(s.Server, s.ticker)
	healthpb.RegisterHealthServer(s.Server, &drainingHealth{Server: s.health, draining: s.draining})
	reflection.Register(s.Server)
	// "" is the server as a whole.
	for _, name := range []string{"", tickerpb.Ticker_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	return s
}

// drain is called when this generation stops taking work (baton's
// OnDrain): health says NOT_SERVING, and the streams that would outlive
// the drain (Ticks, health Watch) end with UNAVAILABLE, which the client
// retries on the next generation. baton's GracefulStop then finds nothing
// held open.
func (s *rpcServer) drain() {
	s.once.Do(func() {
		s.health.Shutdown()
		s.ticker.Drain()
		close(s.draining)
	})
}

// drainingHealth is grpc's health service whose Watch streams end at the
// drain: after they have said NOT_SERVING, with UNAVAILABLE. Left alone, a
// Watch lasts until the client goes away and holds GracefulStop up until
// the drain's deadline cuts it.
type drainingHealth struct {
	*health.Server
	draining <-chan struct{}
}

func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-h.draining:
			cancel()
		case <-stop:
		}
	}()
	w := &watchStream{Health_WatchServer: stream, ctx: ctx, last: -1}
	err := h.Server.Watch(req, w)
	select {
	case <-h.draining:
	default:
		return err
	}
	if stream.Context().Err() != nil {
		return err // the client went away by itself
	}
	if w.last != healthpb.HealthCheckResponse_NOT_SERVING {
		// The drain's NOT_SERVING raced the cancel: say it ourselves.
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, ticker.DrainMessage)
}

// watchStream is a Watch stream whose context also ends at the drain, and
// that remembers the last status sent. Only the Watch goroutine uses it.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx  context.Context
	last healthpb.HealthCheckResponse_ServingStatus
}

func (w *watchStream) Context() context.Context { return w.ctx }

func (w *watchStream) Send(m *healthpb.HealthCheckResponse) error {
	if err := w.Health_WatchServer.Send(m); err != nil {
		return err
	}
	w.last = m.GetStatus()
	return nil
}
