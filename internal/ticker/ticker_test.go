package ticker_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/ticker"
	"github.com/baton-dev/baton/internal/ticker/tickerpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// serve runs the service on a real gRPC server on a loopback port and
// returns a client of it.
func serve(t *testing.T) (*ticker.Service, tickerpb.TickerClient) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	svc := ticker.New()
	tickerpb.RegisterTickerServer(srv, svc)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return svc, tickerpb.NewTickerClient(cc)
}

func TestTicksCount(t *testing.T) {
	_, client := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client.Ticks(ctx, &tickerpb.TicksRequest{Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 3; want++ {
		tick, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv tick %d: %v", want, err)
		}
		if tick.GetSeq() != want || tick.GetPid() != int64(os.Getpid()) {
			t.Errorf("tick %d = seq %d pid %d, want seq %d pid %d", want, tick.GetSeq(), tick.GetPid(), want, os.Getpid())
		}
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after 3 of Count 3 = %v, want io.EOF (the stream complete)", err)
	}
}

// TestDrainEndsStreams: a stream without a count ends at Drain with
// UNAVAILABLE, and a stream started after Drain ends at once the same way.
func TestDrainEndsStreams(t *testing.T) {
	svc, client := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client.Ticks(ctx, &tickerpb.TicksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv before the drain: %v", err)
		}
	}
	svc.Drain()
	svc.Drain() // twice is fine
	for {
		_, err := stream.Recv()
		if err == nil {
			continue // sent before the drain
		}
		if s := status.Convert(err); s.Code() != codes.Unavailable || s.Message() != ticker.DrainMessage {
			t.Fatalf("the stream ended at the drain with %v, want Unavailable %q", err, ticker.DrainMessage)
		}
		break
	}
	stream, err = client.Ticks(ctx, &tickerpb.TicksRequest{Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("a stream started after the drain: Recv = %v, want Unavailable", err)
	}
}
