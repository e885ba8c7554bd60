package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunModes(t *testing.T) {
	tests := []struct {
		mode      Mode
		clients   int
		requests  int64
		wantDials func(d int64) bool
	}{
		{KeepAlive, 4, 400, func(d int64) bool { return d >= 1 && d <= 4 }},
		{NewConnection, 4, 400, func(d int64) bool { return d == 400 }},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			var newConns atomic.Int64
			s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(PIDHeader, "4242")
				w.Header().Set(VersionHeader, "v1.2.3")
				io.WriteString(w, "hello\n")
			}))
			s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					newConns.Add(1)
				}
			}
			s.Start()
			t.Cleanup(s.Close)
			res, err := Run(t.Context(), s.URL+"/hello?x=1", Options{
				Clients: tt.clients, Mode: tt.mode, MaxRequests: tt.requests, Duration: 10 * time.Second,
			})
			if err != nil {
				t.Fatalf("Run() error = %v", err)
			}
			if res.Requests != tt.requests || res.OK != tt.requests || res.Failed() != 0 {
				t.Errorf("Run() requests/ok/failed = %d/%d/%d, want %d/%d/0\n%v", res.Requests, res.OK, res.Failed(), tt.requests, tt.requests, res)
			}
			if !tt.wantDials(res.Dials) {
				t.Errorf("Run() dials = %d, unexpected for %v with %d clients", res.Dials, tt.mode, tt.clients)
			}
			if got := newConns.Load(); got != res.Dials {
				t.Errorf("server saw %d connections, Result.Dials = %d", got, res.Dials)
			}
			if got := res.PIDs["4242"]; got != tt.requests || len(res.PIDs) != 1 {
				t.Errorf("Run() PIDs = %v, want 4242×%d", res.PIDs, tt.requests)
			}
			if got := res.Versions["v1.2.3"]; got != tt.requests || len(res.Versions) != 1 {
				t.Errorf("Run() Versions = %v, want v1.2.3×%d", res.Versions, tt.requests)
			}
			if int64(len(res.Samples)) != tt.requests {
				t.Fatalf("Run() kept %d samples, want %d", len(res.Samples), tt.requests)
			}
			for i, s := range res.Samples {
				if s.PID != 4242 || s.Class != ClassOK || s.Latency <= 0 {
					t.Fatalf("Samples[%d] = %+v, want pid 4242, ok, positive latency", i, s)
				}
				if i > 0 && s.Start < res.Samples[i-1].Start {
					t.Fatalf("Samples not sorted by start at %d", i)
				}
			}
			l := res.Latency
			if l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
				t.Errorf("Run() latency = %+v, want 0 < p50 <= p90 <= p99 <= max", l)
			}
			if res.Steady != res.Latency {
				t.Errorf("without events Steady = %+v, want Latency %+v", res.Steady, res.Latency)
			}
		})
	}
}

func TestServerConnectionCloseIsNotAFailure(t *testing.T) {
	var n atomic.Int64
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "hello\n")
	})
	res, err := Run(t.Context(), s.URL, Options{Clients: 3, MaxRequests: 300})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed() != 0 || res.OK != 300 {
		t.Fatalf("Run() ok/failed = %d/%d, want 300/0\n%v", res.OK, res.Failed(), res)
	}
	if res.Dials < 100 {
		t.Errorf("Run() dials = %d, want >= 100 (a new connection after each Connection: close)", res.Dials)
	}
}

// TestFailureClasses makes each failure class happen for real.
func TestFailureClasses(t *testing.T) {
	const body = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
	tests := []struct {
		name        string
		handle      func(c net.Conn, br *bufio.Reader) // nil: nothing listens
		timeout     time.Duration
		want        Class
		wantWritten bool
	}{
		{name: "refused", want: ClassRefused},
		{name: "eof", want: ClassEOF, wantWritten: true, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
		}},
		{name: "reset", want: ClassReset, wantWritten: true, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			c.(*net.TCPConn).SetLinger(0)
		}},
		{name: "truncated body", want: ClassTruncated, wantWritten: true, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(c, body)
		}},
		{name: "truncated headers", want: ClassTruncated, wantWritten: true, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le")
		}},
		{name: "truncated status line", want: ClassTruncated, wantWritten: true, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(c, "HTTP/1.1 2")
		}},
		{name: "truncated chunked body", want: ClassTruncated, wantWritten: true, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
		}},
		{name: "status", want: ClassStatus, wantWritten: true, handle: func(c net.Conn, br *bufio.Reader) {
			for readRequest(br) {
				io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
			}
		}},
		{name: "timeout", want: ClassTimeout, wantWritten: true, timeout: 100 * time.Millisecond, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			waitClosed(br)
		}},
		{name: "timeout mid-body", want: ClassTimeout, wantWritten: true, timeout: 100 * time.Millisecond, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(c, body)
			waitClosed(br)
		}},
		{name: "other", want: ClassOther, wantWritten: true, handle: func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n\r\n")
			waitClosed(br)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			target := "http://" + closedPort(t) + "/"
			if tt.handle != nil {
				target = newRawServer(t, tt.handle).url()
			}
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 2 * time.Second
			}
			const n = 3
			res, err := Run(t.Context(), target, Options{Clients: 1, MaxRequests: n, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != n || res.Failures.Of(tt.want) != n || res.Failed() != n {
				t.Fatalf("Run() requests %d, failures %+v, want %d %v\n%v", res.Requests, res.Failures, n, tt.want, res)
			}
			if len(res.FailureDetails) != n {
				t.Fatalf("Run() kept %d failure details, want %d", len(res.FailureDetails), n)
			}
			for _, f := range res.FailureDetails {
				wantReq := 1
				if tt.want == ClassRefused {
					wantReq = 0
				}
				if f.Class != tt.want || f.Written != tt.wantWritten || f.ConnRequest != wantReq || f.Error == "" {
					t.Errorf("failure %+v, want class %v, written %t, conn request %d, an error text", f, tt.want, tt.wantWritten, wantReq)
				}
			}
			if tt.want == ClassTimeout {
				for _, s := range res.Samples {
					if s.Latency < timeout || s.Latency > timeout+3*time.Second {
						t.Errorf("timed out request took %v, want about %v", s.Latency, timeout)
					}
				}
			}
		})
	}
}

// TestNoRetry shows that a request sent on a kept connection that the
// server has closed is a counted failure, not a silent retry: the server
// answers one request per connection without "Connection: close" and then
// closes it, as a server closing idle connections does.
func TestNoRetry(t *testing.T) {
	var requests, answered atomic.Int64
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		if !readRequest(br) {
			return
		}
		requests.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		answered.Add(1)
	})
	const n = 20
	res, err := Run(t.Context(), s.url(), Options{Clients: 1, MaxRequests: n})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != n/2 || res.Failed() != n/2 {
		t.Fatalf("Run() ok/failed = %d/%d, want %d/%d\n%v", res.OK, res.Failed(), n/2, n/2, res)
	}
	if got := res.Failures.EOF + res.Failures.Reset; got != n/2 {
		t.Errorf("Run() failures = %+v, want %d eof or reset", res.Failures, n/2)
	}
	for _, f := range res.FailureDetails {
		if f.ConnRequest != 2 {
			t.Errorf("failure %+v, want it on the connection's 2nd request", f)
		}
	}
	if got := answered.Load(); got != res.OK {
		t.Errorf("server answered %d requests, client counted %d OK", got, res.OK)
	}
	if res.Dials != n/2 {
		t.Errorf("Run() dials = %d, want %d (one per answered request)", res.Dials, n/2)
	}
}

func TestBounds(t *testing.T) {
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tests := []struct {
		name       string
		opts       Options
		wantReqs   int64 // 0: any positive number
		minElapsed time.Duration
		maxElapsed time.Duration
	}{
		// The upper bounds leave room for a loaded machine; without the
		// duration the first and last would never end.
		{"duration", Options{Clients: 4, Duration: 300 * time.Millisecond}, 0, 300 * time.Millisecond, 5 * time.Second},
		{"count", Options{Clients: 4, Duration: time.Minute, MaxRequests: 777}, 777, 0, 10 * time.Second},
		{"count newconn", Options{Clients: 8, Mode: NewConnection, Duration: time.Minute, MaxRequests: 333}, 333, 0, 10 * time.Second},
		{"tail without schedule", Options{Clients: 2, Duration: 200 * time.Millisecond, Tail: time.Millisecond}, 0, 200 * time.Millisecond, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res, err := Run(t.Context(), s.URL, tt.opts)
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantReqs > 0 && res.Requests != tt.wantReqs || res.Requests == 0 {
				t.Errorf("Run() requests = %d, want %d", res.Requests, tt.wantReqs)
			}
			if res.Failed() != 0 {
				t.Errorf("Run() failed = %d, want 0\n%v", res.Failed(), res)
			}
			if took < tt.minElapsed || took > tt.maxElapsed {
				t.Errorf("Run() took %v, want within [%v, %v]", took, tt.minElapsed, tt.maxElapsed)
			}
		})
	}
}

func TestCancelAbortsInFlight(t *testing.T) {
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		waitClosed(br)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, s.url(), Options{Clients: 4, Timeout: time.Minute, Duration: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run() error = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Run() took %v after cancellation, want it prompt", took)
	}
	if res == nil || res.Aborted != 4 || res.Failed() != 0 || res.Requests != 0 {
		t.Fatalf("Run() = %v, want 4 aborted and no failures", res)
	}
}

func TestDial(t *testing.T) {
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	want := strings.TrimPrefix(s.URL, "http://")
	var mu sync.Mutex
	var dials int64
	var addrs []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if _, ok := ctx.Deadline(); !ok {
			return nil, errors.New("dial context without deadline")
		}
		mu.Lock()
		dials++
		addrs = append(addrs, network+" "+addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	res, err := Run(t.Context(), s.URL, Options{Clients: 3, MaxRequests: 60, Mode: NewConnection, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 60 || dials != 60 || res.Dials != 60 {
		t.Fatalf("Run() ok %d, Dial called %d times, Result.Dials %d; want 60 each\n%v", res.OK, dials, res.Dials, res)
	}
	for _, a := range addrs {
		if a != "tcp "+want {
			t.Fatalf("Dial(%q), want tcp %s", a, want)
		}
	}
}

func TestDialErrorIsClassified(t *testing.T) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, fmt.Errorf("no route in this test")
	}
	res, err := Run(t.Context(), "http://192.0.2.1:80/", Options{Clients: 2, MaxRequests: 10, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failures.Other != 10 {
		t.Errorf("Run() failures = %+v, want 10 other", res.Failures)
	}
}

func TestInvalidOptions(t *testing.T) {
	tests := []struct {
		name   string
		target string
		opts   Options
	}{
		{"https", "https://127.0.0.1/", Options{}},
		{"no host", "http:///x", Options{}},
		{"not a url", "http://[::1", Options{}},
		{"negative clients", "http://127.0.0.1/", Options{Clients: -1}},
		{"negative duration", "http://127.0.0.1/", Options{Duration: -1}},
		{"negative count", "http://127.0.0.1/", Options{MaxRequests: -1}},
		{"negative timeout", "http://127.0.0.1/", Options{Timeout: -1}},
		{"bad mode", "http://127.0.0.1/", Options{Mode: 7}},
		{"negative every", "http://127.0.0.1/", Options{Schedule: Schedule{Every: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Run(t.Context(), tt.target, tt.opts)
			if err == nil || res != nil || !strings.HasPrefix(err.Error(), "load: ") {
				t.Errorf("Run(%q, %+v) = %v, %v; want nil and a load: error", tt.target, tt.opts, res, err)
			}
		})
	}
}

func TestSampleCaps(t *testing.T) {
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) { readRequest(br) })
	res, err := Run(t.Context(), s.url(), Options{Clients: 2, MaxRequests: 50, MaxSamples: 10, MaxFailureDetails: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 10 || res.SamplesDropped != 40 || len(res.FailureDetails) != 5 || res.Failures.EOF != 50 {
		t.Errorf("Run() samples %d dropped %d details %d eof %d; want 10, 40, 5, 50",
			len(res.Samples), res.SamplesDropped, len(res.FailureDetails), res.Failures.EOF)
	}
	res, err = Run(t.Context(), s.url(), Options{Clients: 2, MaxRequests: 50, MaxSamples: -1, MaxFailureDetails: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 0 || len(res.FailureDetails) != 0 || res.Failures.EOF != 50 {
		t.Errorf("Run() with caps off: samples %d details %d eof %d; want 0, 0, 50", len(res.Samples), len(res.FailureDetails), res.Failures.EOF)
	}
}
