package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// checkFourSockets checks that webapp serves its other three sockets:
// HTTPS with HTTP/2 by ALPN, gRPC health SERVING, and the UDP echo.
func checkFourSockets(t testing.TB, https, grpcAddr, udp string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := waitHTTPS(ctx, https); err != nil {
		t.Fatal(err)
	}
	if err := waitGRPC(ctx, grpcAddr); err != nil {
		t.Fatal(err)
	}
	if err := waitUDP(ctx, udp); err != nil {
		t.Fatal(err)
	}
}

// retry calls f until it succeeds or ctx ends, and returns f's last error.
func retry(ctx context.Context, what string, f func(ctx context.Context) error) error {
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitHTTPS waits until addr answers GET / over TLS with HTTP/2.
func waitHTTPS(ctx context.Context, addr string) error {
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	return retry(ctx, "https "+addr, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			return fmt.Errorf("GET / = %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
		}
		return nil
	})
}

// grpcConn is a gRPC client connection over h2c.
func grpcConn(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// waitGRPC waits until addr's grpc.health.v1.Health says SERVING.
func waitGRPC(ctx context.Context, addr string) error {
	cc, err := grpcConn(addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	return retry(ctx, "grpc "+addr, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("Health.Check = %v, want SERVING", resp.GetStatus())
		}
		return nil
	})
}

// waitUDP waits until addr answers a datagram as webapp does.
func waitUDP(ctx context.Context, addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 512)
	return retry(ctx, "udp "+addr, func(ctx context.Context) error {
		msg := []byte("ready? " + strconv.FormatInt(time.Now().UnixNano(), 10))
		if _, err := c.Write(msg); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			if _, err := ParseUDPAnswer(buf[:n], msg); err == nil {
				return nil
			}
		}
	})
}
