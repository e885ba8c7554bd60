package baton_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/drain"
	"github.com/baton-dev/baton/internal/testcert"
	"github.com/baton-dev/baton/systemd/notifytest"
)

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// notifyUntilMark returns what the notify socket received before a mark
// the test sends now: a datagram socket keeps the order of what was sent
// to it, so everything the service sent before is among them.
func notifyUntilMark(t *testing.T, sock *notifytest.Socket) []notifytest.Message {
	t.Helper()
	c, err := net.Dial("unixgram", sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("X_TEST_MARK=1")); err != nil {
		t.Fatal(err)
	}
	_, i := sock.WaitFor(t, 0, "X_TEST_MARK=1", 10*time.Second)
	return sock.Messages()[:i]
}

// refused checks that nothing listens on the TCP address.
func refused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Errorf("%s accepts a connection, want it refused", addr)
		return
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
}

// unbound checks that the UDP address is free.
func unbound(t *testing.T, addr string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Errorf("%s still bound: %v", addr, err)
		return
	}
	pc.Close()
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := testcert.New(t, "baton test")
	return c.TLS, c.Pool()
}

func h2cProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// h2cClient speaks HTTP/2 with prior knowledge, without TLS.
func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Protocols: p}}
}

// httpAsGRPC is a GRPCServer made of an h2c http.Server: the verbs of
// *grpc.Server (Serve, GracefulStop waiting for the calls under way, Stop
// cutting them) on a real HTTP/2 server, without importing gRPC.
type httpAsGRPC struct{ srv *http.Server }

func (s httpAsGRPC) Serve(ln net.Listener) error { return s.srv.Serve(ln) }
func (s httpAsGRPC) GracefulStop()               { s.srv.Shutdown(context.Background()) }
func (s httpAsGRPC) Stop()                       { s.srv.Close() }

// testLog records what Run logs.
type testLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *testLog) add(level, format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, level+": "+fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *testLog) Infof(format string, args ...any)  { l.add("info", format, args...) }
func (l *testLog) Warnf(format string, args ...any)  { l.add("warn", format, args...) }
func (l *testLog) Errorf(format string, args ...any) { l.add("error", format, args...) }

func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// waitRun waits for Run's result.
func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20 s of the context's end")
		return nil
	}
}

func proto(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s\n", r.Proto) }

// TestRunAllKinds runs one service with every kind of server at once:
// HTTP/1.1 and h2c, HTTP/2 over TLS, a gRPC-like server, a line echo on
// a raw stream, a UDP echo and a held socket. Each answers, STATUS names
// every socket; at the end of the context the echo handler returns, an
// HTTP/2 response under way completes while new connections are refused,
// and Run returns nil with every socket closed.
func TestRunAllKinds(t *testing.T) {
	notify := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", notify.Addr())
	t.Setenv("RUNTIME_DIRECTORY", "")
	h2cAddr, tlsAddr, grpcAddr, echoAddr, heldAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	udpAddr := freeUDPAddr(t)
	cert, pool := selfSigned(t)

	slowStarted, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", proto)
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first half\n")
		w.(http.Flusher).Flush()
		close(slowStarted)
		<-release
		io.WriteString(w, "second half\n")
	})
	h2cSrv := &http.Server{Handler: mux, Protocols: h2cProtocols()}
	tlsSrv := &http.Server{Handler: http.HandlerFunc(proto), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	grpcSrv := httpAsGRPC{&http.Server{Handler: http.HandlerFunc(proto), Protocols: h2cProtocols()}}
	echoReturned := make(chan struct{}, 1)
	echo := func(ctx context.Context, c net.Conn) {
		defer func() { echoReturned <- struct{}{} }()
		stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			fmt.Fprintf(c, "%s\n", sc.Text())
		}
	}
	udpEcho := func(pc net.PacketConn, b []byte, from net.Addr) { pc.WriteTo(b, from) }

	log := &testLog{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{IdleGrace: 100 * time.Millisecond, DrainTimeout: 15 * time.Second, Logger: log},
			baton.HTTP(baton.Socket{Name: "h2c", Address: h2cAddr}, h2cSrv),
			baton.HTTP(baton.Socket{Name: "tls", Address: tlsAddr}, tlsSrv),
			baton.GRPC(baton.Socket{Name: "grpc", Address: grpcAddr}, grpcSrv),
			baton.Stream(baton.Socket{Name: "echo", Address: echoAddr}, echo),
			baton.Datagram(baton.Socket{Name: "udp", Address: udpAddr}, udpEcho),
			baton.Hold(baton.Socket{Name: "held", Address: heldAddr}, "no certificate yet"),
		)
	}()
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", log)
		}
	}()
	ready, _ := notify.WaitFor(t, 0, "READY=1", 15*time.Second)
	st, _ := ready.Get("STATUS")
	for _, want := range []string{"h2c on " + h2cAddr, "tls on " + tlsAddr, "grpc on " + grpcAddr, "echo on " + echoAddr,
		"udp on " + udpAddr, "held on " + heldAddr + " (held, not served)", "(bound)"} {
		if !strings.Contains(st, want) {
			t.Errorf("STATUS=%q, want it to name %q", st, want)
		}
	}
	if !strings.Contains(log.String(), "held: holding the socket without serving it: no certificate yet") {
		t.Errorf("log:\n%s\nwant it to say why held is not served", log)
	}

	// HTTP/1.1 and h2c on one socket, h2c on the gRPC-like one.
	h2 := h2cClient()
	for _, c := range []struct {
		client *http.Client
		url    string
		want   string
	}{
		{&http.Client{Timeout: 10 * time.Second}, "http://" + h2cAddr + "/", "HTTP/1.1\n"},
		{h2, "http://" + h2cAddr + "/", "HTTP/2.0\n"},
		{h2, "http://" + grpcAddr + "/", "HTTP/2.0\n"},
	} {
		resp, err := c.client.Get(c.url)
		if err != nil {
			t.Fatalf("GET %s: %v", c.url, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != c.want {
			t.Errorf("GET %s = %q, want %q", c.url, b, c.want)
		}
	}
	// TLS, with HTTP/2 chosen by ALPN.
	tlsClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	resp, err := tlsClient.Get("https://" + tlsAddr + "/")
	if err != nil {
		t.Fatalf("GET https://%s/: %v", tlsAddr, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" || string(b) != "HTTP/2.0\n" {
		t.Errorf("GET https://%s/ = %q over ALPN %q, want HTTP/2.0 over h2", tlsAddr, b, resp.TLS.NegotiatedProtocol)
	}
	// The line echo, left open.
	ec, err := net.Dial("tcp", echoAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	ec.SetDeadline(time.Now().Add(10 * time.Second))
	er := bufio.NewReader(ec)
	io.WriteString(ec, "hi there\n")
	if l, err := er.ReadString('\n'); l != "hi there\n" {
		t.Errorf("echo answered %q, %v, want hi there", l, err)
	}
	// The UDP echo.
	uc, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("ping"))
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	ub := make([]byte, 64)
	if n, err := uc.Read(ub); string(ub[:n]) != "ping" {
		t.Errorf("udp echo answered %q, %v, want ping", ub[:n], err)
	}

	// An HTTP/2 response under way when the context ends.
	type result struct {
		body, proto string
		err         error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := h2.Get("http://" + h2cAddr + "/slow")
		if err != nil {
			slow <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- result{string(b), resp.Proto, err}
	}()
	<-slowStarted
	cancel()

	// The echo handler sees the drain and returns: its connection closes.
	if l, err := er.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Errorf("echo connection after the context ended: %q, %v, want EOF", l, err)
	}
	select {
	case <-echoReturned:
	case <-time.After(10 * time.Second):
		t.Error("the echo handler did not return at the drain")
	}
	// New connections are refused while the response is still under way.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", h2cAddr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections still accepted 10 s into the drain")
		}
	}
	select {
	case r := <-slow:
		t.Fatalf("the slow response ended before it was let go: %+v", r)
	default:
	}
	close(release)
	r := <-slow
	if r.err != nil || r.body != "first half\nsecond half\n" || r.proto != "HTTP/2.0" {
		t.Errorf("slow response under way at the drain: %q over %s, %v, want both halves over HTTP/2.0", r.body, r.proto, r.err)
	}
	if err := waitRun(t, done); err != nil {
		t.Errorf("Run() = %v after a clean drain, want nil", err)
	}
	notify.WaitFor(t, 0, "STOPPING=1", time.Second)
	for _, addr := range []string{h2cAddr, tlsAddr, grpcAddr, echoAddr, heldAddr} {
		refused(t, addr)
	}
	unbound(t, udpAddr)
}

// TestRunDeadlineCut ends the context while every kind of server has work
// that outlives the drain deadline: Run returns drain.ErrCut, naming each
// socket that was cut with its count, and not the one that drained clean.
func TestRunDeadlineCut(t *testing.T) {
	notify := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", notify.Addr())
	t.Setenv("RUNTIME_DIRECTORY", "")
	webAddr, rawAddr, grpcAddr, cleanAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	udpAddr := freeUDPAddr(t)

	started := make(chan string, 10)
	block := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/block" {
			hello(w, r)
			return
		}
		started <- "http " + r.Host
		<-r.Context().Done() // ends when the connection is cut
	}
	unblock := make(chan struct{})
	defer close(unblock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{DrainTimeout: 500 * time.Millisecond, IdleGrace: 50 * time.Millisecond},
			baton.HTTP(baton.Socket{Name: "web", Address: webAddr}, &http.Server{Handler: http.HandlerFunc(block)}),
			baton.Stream(baton.Socket{Name: "raw", Address: rawAddr}, func(_ context.Context, c net.Conn) {
				started <- "raw"
				io.Copy(io.Discard, c) // ignores ctx; ends when the connection is cut
			}),
			baton.GRPC(baton.Socket{Name: "grpc", Address: grpcAddr}, httpAsGRPC{&http.Server{Handler: http.HandlerFunc(block), Protocols: h2cProtocols()}}),
			baton.Datagram(baton.Socket{Name: "udp", Address: udpAddr}, func(net.PacketConn, []byte, net.Addr) {
				started <- "udp"
				<-unblock // a handler that cannot be cut
			}),
			baton.HTTP(baton.Socket{Name: "clean", Address: cleanAddr}, &http.Server{Handler: http.HandlerFunc(hello)}),
		)
	}()
	notify.WaitFor(t, 0, "READY=1", 15*time.Second)

	wc, err := net.Dial("tcp", webAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	io.WriteString(wc, "GET /block HTTP/1.1\r\nHost: web\r\n\r\n")
	for range 2 {
		rc, err := net.Dial("tcp", rawAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
	}
	go func() {
		resp, err := h2cClient().Get("http://" + grpcAddr + "/block")
		if err == nil {
			resp.Body.Close()
		}
	}()
	uc, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("block"))
	// A keep-alive connection of the clean server, idle at the drain.
	if resp, err := http.Get("http://" + cleanAddr + "/"); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	got := map[string]int{}
	for range 5 {
		select {
		case s := <-started:
			got[s]++
		case <-time.After(10 * time.Second):
			t.Fatalf("work under way: %v, want 2 raw, 1 udp and 2 http", got)
		}
	}
	cancel()
	err = waitRun(t, done)
	if !errors.Is(err, drain.ErrCut) {
		t.Fatalf("Run() = %v, want drain.ErrCut", err)
	}
	msg := err.Error()
	for _, want := range []string{"5 connections cut at the deadline", "web 1", "raw 2", "grpc 1", "udp 1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Run() = %q, want it to say %q", msg, want)
		}
	}
	if strings.Contains(msg, "clean") {
		t.Errorf("Run() = %q names the server that drained clean", msg)
	}
	notify.WaitFor(t, 0, "STOPPING=1", time.Second)
	msgs := notifyUntilMark(t, notify)
	last, _ := msgs[len(msgs)-1].Get("STATUS")
	if last != "stopped: 5 connections cut at the 500ms deadline" {
		t.Errorf("last STATUS=%q, want the cut count", last)
	}
}

// TestRunBadInput: Run refuses what it cannot serve before it binds or
// tells systemd anything, and says which socket and what is wrong.
func TestRunBadInput(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	h := &http.Server{Handler: http.HandlerFunc(hello)}
	echo := func(context.Context, net.Conn) {}
	udp := func(net.PacketConn, []byte, net.Addr) {}
	cert, _ := selfSigned(t)
	other, _ := selfSigned(t)
	mismatched := tls.Certificate{Certificate: cert.Certificate, PrivateKey: other.PrivateKey}
	for _, c := range []struct {
		name string
		// servers gets two free TCP addresses and a free UDP one.
		servers func(a, b, u string) []*baton.Server
		want    []string
	}{
		{"no server", func(a, b, u string) []*baton.Server { return nil }, []string{"no server to run"}},
		{"nil server", func(a, b, u string) []*baton.Server {
			return []*baton.Server{baton.HTTP(baton.Socket{Name: "http", Address: a}, h), nil}
		}, []string{"server 1 is nil"}},
		{"nil handlers", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "web", Address: a}, nil),
				baton.Stream(baton.Socket{Name: "echo", Address: b}, nil),
				baton.Datagram(baton.Socket{Name: "dns", Address: u}, nil),
				baton.GRPC(baton.Socket{Name: "grpc", Address: "127.0.0.1:1"}, nil),
			}
		}, []string{`"web": HTTP: nil *http.Server`, `"echo": Stream: nil handler`, `"dns": Datagram: nil handler`, `"grpc": GRPC: nil server`}},
		{"two servers on one name", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "http", Address: a}, h),
				baton.Stream(baton.Socket{Name: "http", Address: b}, echo),
			}
		}, []string{`"http": two servers for one socket name`}},
		{"datagram on a tcp socket", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "http", Address: a}, h),
				baton.Datagram(baton.Socket{Name: "dns", Network: "tcp", Address: b}, udp),
			}
		}, []string{`"dns": a datagram server needs a datagram Network`, `not "tcp"`}},
		{"http on a udp socket", func(a, b, u string) []*baton.Server {
			return []*baton.Server{baton.HTTP(baton.Socket{Name: "web", Network: "udp", Address: u}, h)}
		}, []string{`"web": a stream server cannot serve datagram network "udp"`}},
		{"tls without certificates", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "http", Address: a}, h),
				baton.HTTP(baton.Socket{Name: "https", Address: b}, &http.Server{Handler: h.Handler, TLSConfig: &tls.Config{}}),
			}
		}, []string{`"https": TLSConfig has no certificate`}},
		{"tls certificate not matching its key", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "https", Address: b}, &http.Server{Handler: h.Handler, TLSConfig: &tls.Config{
					Certificates: []tls.Certificate{cert, mismatched},
				}}),
			}
		}, []string{`"https": TLSConfig certificate 1`, "does not match its private key"}},
		{"defer build fails", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "http", Address: a}, h),
				baton.Defer(baton.Socket{Name: "https", Address: b}, func() (*baton.Server, error) {
					return nil, errors.New("no certificate in /etc/webapp")
				}),
			}
		}, []string{`"https": no certificate in /etc/webapp`}},
		{"defer builds a server for another socket", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.Defer(baton.Socket{Name: "https", Address: b}, func() (*baton.Server, error) {
					return baton.HTTP(baton.Socket{Name: "http", Address: a}, h), nil
				}),
			}
		}, []string{`"https": Defer's build returned a server for socket "http"`}},
		{"invalid socket name", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "http", Address: a}, h),
				baton.Stream(baton.Socket{Name: "ad:min", Address: b}, echo),
			}
		}, []string{`"ad:min"`, "bad spec", "without ':'"}},
		{"empty socket name", func(a, b, u string) []*baton.Server {
			return []*baton.Server{baton.HTTP(baton.Socket{Address: a}, h)}
		}, []string{`""`, "bad spec"}},
		{"unknown network", func(a, b, u string) []*baton.Server {
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "http", Address: a}, h),
				baton.Stream(baton.Socket{Name: "sctp", Network: "sctp", Address: b}, echo),
			}
		}, []string{`"sctp"`, `network "sctp"`}},
		{"fallback address taken", func(a, b, u string) []*baton.Server {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { taken.Close() })
			return []*baton.Server{
				baton.HTTP(baton.Socket{Name: "http", Address: a}, h),
				baton.Datagram(baton.Socket{Name: "dns", Address: u}, udp),
				baton.Stream(baton.Socket{Name: "echo", Address: taken.Addr().String()}, echo),
			}
		}, []string{`"echo"`, "address already in use"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			notify := notifytest.Listen(t)
			t.Setenv("NOTIFY_SOCKET", notify.Addr())
			a, b, u := freeAddr(t), freeAddr(t), freeUDPAddr(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := baton.Run(ctx, baton.Options{}, c.servers(a, b, u)...)
			if err == nil {
				t.Fatalf("Run() = nil, want an error")
			}
			t.Logf("Run() = %v", err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Run() = %q, want it to say %s", err, w)
				}
			}
			refused(t, a)
			refused(t, b)
			unbound(t, u)
			for _, m := range notifyUntilMark(t, notify) {
				if m.Has("READY=1") {
					t.Errorf("READY=1 sent by a service that did not start: %v", m)
				}
			}
		})
	}
}

// TestRunOptionalSocket: an Optional socket the service does not get (no
// descriptor passed, no fallback address) is not served, and not an
// error, and a Defer server on such a socket is never built; the others
// serve, a Defer one among them.
func TestRunOptionalSocket(t *testing.T) {
	notify := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", notify.Addr())
	t.Setenv("RUNTIME_DIRECTORY", "")
	addr, adminAddr := freeAddr(t), freeAddr(t)
	var built atomic.Int32
	log := &testLog{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{IdleGrace: 50 * time.Millisecond, Logger: log},
			baton.HTTP(baton.Socket{Name: "http", Address: addr}, &http.Server{Handler: http.HandlerFunc(hello)}),
			baton.Stream(baton.Socket{Name: "grpc", Optional: true}, func(context.Context, net.Conn) {}),
			baton.Defer(baton.Socket{Name: "https", Optional: true}, func() (*baton.Server, error) {
				built.Add(1)
				return nil, errors.New("built for a socket that is not there")
			}),
			baton.Defer(baton.Socket{Name: "admin", Address: adminAddr}, func() (*baton.Server, error) {
				return baton.HTTP(baton.Socket{Name: "admin", Address: adminAddr}, &http.Server{Handler: http.HandlerFunc(hello)}), nil
			}),
		)
	}()
	ready, _ := notify.WaitFor(t, 0, "READY=1", 15*time.Second)
	st, _ := ready.Get("STATUS")
	if !strings.Contains(st, "http on "+addr) || !strings.Contains(st, "admin on "+adminAddr) || strings.Contains(st, "grpc") || strings.Contains(st, "https") {
		t.Errorf("STATUS=%q, want http on %s, admin on %s, and nothing of grpc or https", st, addr, adminAddr)
	}
	for _, want := range []string{"grpc: no socket passed (optional): not serving it", "https: no socket passed (optional): not serving it"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log:\n%s\nwant %q", log, want)
		}
	}
	if n := built.Load(); n != 0 {
		t.Errorf("Defer's build called %d times for an optional socket that is not there, want never", n)
	}
	for _, a := range []string{addr, adminAddr} {
		resp, err := http.Get("http://" + a + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello\n" {
			t.Errorf("GET http://%s/ = %q, want hello", a, b)
		}
	}
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	refused(t, addr)
	refused(t, adminAddr)
}
