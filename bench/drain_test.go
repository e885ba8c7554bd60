package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/internal/ticker"
	"github.com/baton-dev/baton/internal/ticker/tickerpb"
	"github.com/baton-dev/baton/systemd/systemdtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// runDrain is scenario 7: webapp on its own sockets (no systemd) with
// many HTTP/2 connections and webapp.v1.Ticker/Ticks streams open gets
// SIGTERM; how long until it exits, what its log says was cut, and how
// the streams ended. In the idle case the connections were busy and then
// went idle before the signal; in the busy case their clients go on
// sending through the drain, each until its first failed request.
func runDrain(t *testing.T, e *benchEnv) *Drain {
	cfg := e.cfg
	d := &Drain{Rounds: cfg.drainRounds, DrainTimeout: cfg.drainTimeout, IdleGrace: drain.DefaultIdleGrace}
	for _, busy := range []bool{false, true} {
		c := DrainCase{H2Conns: cfg.drainConns, Streams: cfg.drainStreams, Busy: busy, StreamEnds: map[string]int{}, AfterGoaway: map[string]int{}}
		c.Situation = fmt.Sprintf("%d HTTP/2 connections, busy then idle, and %d Ticks streams", c.H2Conns, c.Streams)
		if busy {
			c.Situation = fmt.Sprintf("%d HTTP/2 connections kept busy through the drain, and %d Ticks streams", c.H2Conns, c.Streams)
		}
		for round := range cfg.drainRounds {
			drainRound(t, e, &c, round)
		}
		d.Cases = append(d.Cases, c)
	}
	return d
}

// lockedBuffer collects a server's output for reading while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func drainRound(t *testing.T, e *benchEnv, c *DrainCase, round int) {
	cfg := e.cfg
	certFile, keyFile := writeTestCertificate(t)
	port := func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(systemdtest.Port(t))) }
	addr, https, grpcAddr, udp := port(), port(), port(), port()
	var out lockedBuffer
	p, err := StartProc(e.bins.webapp, []string{"serve", "--listen", addr, "--listen-https", https, "--listen-grpc", grpcAddr, "--listen-udp", udp,
		"--tls-cert", certFile, "--tls-key", keyFile, "--drain-timeout", cfg.drainTimeout.String()},
		io.MultiWriter(e.logFile(t, "drain-webapp"), &out), webappReady, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	checkFourSockets(t, https, grpcAddr, udp)

	// The HTTP/2 connections: one client each, with a transport of its
	// own so that each keeps exactly one connection.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	clients := make([]*http.Client, c.H2Conns)
	for i := range clients {
		tr := &http.Transport{Protocols: &h2, MaxConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		clients[i] = &http.Client{Transport: tr, Timeout: time.Minute}
	}
	get := func(cl *http.Client) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != 200 || resp.ProtoMajor != 2) {
			err = fmt.Errorf("GET / = %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
		}
		return err
	}
	// Busy: every connection sends requests for a while.
	var wg sync.WaitGroup
	busyUntil := time.Now().Add(300 * time.Millisecond)
	for _, cl := range clients {
		wg.Go(func() {
			for time.Now().Before(busyUntil) {
				if err := get(cl); err != nil {
					t.Errorf("drain round %d: before SIGTERM: %v", round+1, err)
					return
				}
			}
		})
	}
	wg.Wait()

	// The streams, each until its first tick.
	cc, err := grpcConn(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ends := make(chan error, c.Streams)
	for range c.Streams {
		st, err := tickerpb.NewTickerClient(cc).Ticks(ctx, &tickerpb.TicksRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		if err != nil {
			t.Fatalf("drain round %d: Ticks: %v", round+1, err)
		}
		go func() {
			for {
				if _, err := st.Recv(); err != nil {
					ends <- err
					return
				}
			}
		}()
	}

	// Busy through the drain: each client until its first error.
	var sig atomic.Int64 // SIGTERM's time, UnixNano; 0 before
	var during atomic.Int64
	var mu sync.Mutex
	stopBusy := make(chan struct{})
	if c.Busy {
		for _, cl := range clients {
			wg.Go(func() {
				for i := 0; i < 1_000_000 && !stopped(stopBusy); i++ {
					err := get(cl)
					if err != nil {
						mu.Lock()
						c.AfterGoaway[goawayError(err)]++
						mu.Unlock()
						return
					}
					if sig.Load() != 0 {
						during.Add(1)
					}
				}
			})
		}
		time.Sleep(200 * time.Millisecond)
	} else {
		time.Sleep(100 * time.Millisecond)
	}
	sig.Store(time.Now().UnixNano())
	exit, err := p.Stop(syscall.SIGTERM, cfg.drainTimeout+30*time.Second)
	if err != nil {
		t.Errorf("drain round %d: %v", round+1, err)
	}
	close(stopBusy)
	wg.Wait()
	c.Exit = append(c.Exit, exit)
	c.DuringDrain += during.Load()
	unavailable, others := 0, map[string]int{}
	for range c.Streams {
		select {
		case err := <-ends:
			st := status.Convert(err)
			if st.Code() == codes.Unavailable && st.Message() == ticker.DrainMessage {
				unavailable++
			} else {
				others[fmt.Sprintf("%s %q", st.Code(), st.Message())]++
			}
		case <-time.After(10 * time.Second):
			others["still open 10 s after the exit"]++
		}
	}
	c.Unavailable += unavailable
	for k, n := range others {
		c.StreamEnds[k] += n
	}
	var o DrainOutcome
	err = retry(ctx, "webapp's drain log line", func(context.Context) error {
		var err error
		o, err = ParseDrainLog(out.String())
		return err
	})
	if err != nil {
		t.Errorf("drain round %d: %v\n%s", round+1, err, lastLines(out.String(), 10))
	}
	c.Took = append(c.Took, o.Took)
	c.Cut = append(c.Cut, o.Cut)
	c.Line = o.Line
	t.Logf("drain round %d, %s: exit after %v, %q; streams: %d UNAVAILABLE %q, others %v; requests during the drain %d",
		round+1, c.Situation, exit, o.Line, unavailable, ticker.DrainMessage, others, during.Load())
}

// goawayError names the error a client saw once its connection was gone.
func goawayError(err error) string {
	var op *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (the listener is closed)"
	case errors.As(err, &op) && op.Op == "dial":
		return "dial: " + oneLine(op.Err.Error())
	case strings.Contains(err.Error(), "GOAWAY"):
		return "GOAWAY: " + oneLine(err.Error())
	}
	return oneLine(err.Error())
}
