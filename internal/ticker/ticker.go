// Package ticker is webapp's gRPC service webapp.v1.Ticker (its .proto is
// proto/webapp/v1/ticker.proto, the generated code package tickerpb): a
// server-streaming RPC that sends a tick, with the pid and a sequence
// number, every 100 ms. Drain ends every stream with UNAVAILABLE, the
// status a client retries, so that a long stream moves to the next
// generation of the service instead of holding up the drain.
package ticker

import (
	"os"
	"sync"
	"time"

	"github.com/baton-dev/baton/internal/ticker/tickerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Interval is the time between two ticks of a stream.
const Interval = 100 * time.Millisecond

// DrainMessage is the message of the UNAVAILABLE status that ends the
// streams at the drain.
const DrainMessage = "draining, retry"

// Service implements tickerpb.TickerServer. Register it with
// tickerpb.RegisterTickerServer.
type Service struct {
	tickerpb.UnimplementedTickerServer

	pid      int64
	draining chan struct{}
	once     sync.Once
}

// New returns the service, ticking with this process's pid.
func New() *Service {
	return &Service{pid: int64(os.Getpid()), draining: make(chan struct{})}
}

// Drain ends every stream under way, and every stream started from now
// on, with codes.Unavailable and DrainMessage. It may be called more than
// once.
func (s *Service) Drain() {
	s.once.Do(func() { close(s.draining) })
}

// Ticks sends req.Count ticks (0: until the client cancels or the drain),
// the first at once, then one every Interval.
func (s *Service) Ticks(req *tickerpb.TicksRequest, stream grpc.ServerStreamingServer[tickerpb.Tick]) error {
	ctx := stream.Context()
	t := time.NewTicker(Interval)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-s.draining:
			return status.Error(codes.Unavailable, DrainMessage)
		default:
		}
		if err := stream.Send(&tickerpb.Tick{Pid: s.pid, Seq: seq}); err != nil {
			return err
		}
		if req.GetCount() != 0 && seq >= uint64(req.GetCount()) {
			return nil
		}
		select {
		case <-t.C:
		case <-s.draining:
			return status.Error(codes.Unavailable, DrainMessage)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}
