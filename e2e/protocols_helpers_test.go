package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testcert"
	"github.com/baton-dev/baton/internal/ticker"
	"github.com/baton-dev/baton/internal/ticker/tickerpb"
	"github.com/baton-dev/baton/systemd/systemdtest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// The certificate and key webapp reads (ExecReload=+ `webapp reload`
// opens them, LoadCredential= copies them at start).
const (
	certPath = "/etc/webapp/tls.crt"
	keyPath  = "/etc/webapp/tls.key"
)

// extraSocket is one of webapp's optional socket units.
type extraSocket struct {
	unit     string
	datagram bool // ListenDatagram= rather than ListenStream=
}

var extraSockets = []extraSocket{
	{unit: "webapp-https.socket"},
	{unit: "webapp-grpc.socket"},
	{unit: "webapp-udp.socket", datagram: true},
}

// fourSockets is webapp serving its four sockets (http, https, grpc, udp)
// in a booted box, each on a port of its own.
type fourSockets struct {
	*service
	httpsPort, grpcPort, udpPort int
}

func (f *fourSockets) httpsURL() string { return fmt.Sprintf("https://127.0.0.1:%d", f.httpsPort) }
func (f *fourSockets) grpcAddr() string { return fmt.Sprintf("127.0.0.1:%d", f.grpcPort) }
func (f *fourSockets) udpAddr() string  { return fmt.Sprintf("127.0.0.1:%d", f.udpPort) }

// socketUnits are the four socket units, webapp.socket first.
func (f *fourSockets) socketUnits() []string {
	units := []string{"webapp.socket"}
	for _, e := range extraSockets {
		units = append(units, e.unit)
	}
	return units
}

// startAllSockets is startService with all four of webapp's socket units,
// installed from systemd/units/ with drop-ins that move each to a free
// port; it installs cert (if not nil) as /etc/webapp/tls.crt and tls.key
// (0600, root), starts the four sockets and then webapp.service, and
// checks that webapp serves all four (none held).
//
// Where the shipped webapp.service lacks what serving TLS through reloads
// and restarts needs, a drop-in adds it, and says so in the test log:
// ExecReload=+/usr/bin/webapp reload (so that the reload, as root, can
// open the key and hand it over) and LoadCredential= of the two files
// (so that a started webapp can read the key). A shipped unit that sets
// them is used as it is.
func startAllSockets(t *testing.T, opts serviceOptions, cert *testCert) *fourSockets {
	t.Helper()
	start := opts.NoStart
	opts.NoStart = true
	f := &fourSockets{service: startService(t, opts)}
	for _, e := range extraSockets {
		listen := "ListenStream"
		port := systemdtest.Port(t)
		if e.datagram {
			listen = "ListenDatagram"
			port = udpPort(t)
		}
		switch e.unit {
		case "webapp-https.socket":
			f.httpsPort = port
		case "webapp-grpc.socket":
			f.grpcPort = port
		case "webapp-udp.socket":
			f.udpPort = port
		}
		f.box.WriteFile(t, "/etc/systemd/system/"+e.unit, unit(t, e.unit), 0o644)
		f.box.WriteFile(t, "/etc/systemd/system/"+e.unit+".d/port.conf",
			[]byte(fmt.Sprintf("[Socket]\n%s=\n%s=127.0.0.1:%d\n", listen, listen, port)), 0o644)
	}
	if bridge := serviceBridge(string(unit(t, "webapp.service"))); bridge != "" {
		t.Logf("the shipped webapp.service lacks settings the TLS socket needs; a drop-in adds:\n%s", bridge)
		f.box.WriteFile(t, "/etc/systemd/system/webapp.service.d/tls.conf", []byte("[Service]\n"+bridge), 0o644)
	}
	if cert != nil {
		f.installCert(t, cert.certPEM, cert.keyPEM)
	}
	f.box.Systemctl(t, "daemon-reload")
	if start {
		return f
	}
	f.box.Systemctl(t, append([]string{"start"}, f.socketUnits()...)...)
	f.box.Systemctl(t, "start", "webapp.service")
	f.checkServing(t, cert != nil)
	return f
}

// checkServing checks, by webapp's STATUS=, that it serves the four
// sockets passed by systemd, https held if withCert is false.
func (f *fourSockets) checkServing(t *testing.T, withCert bool) {
	t.Helper()
	st := f.show(t, "StatusText", "ActiveState")
	want := []string{
		fmt.Sprintf("http on 127.0.0.1:%d", f.port),
		fmt.Sprintf("https on 127.0.0.1:%d", f.httpsPort),
		fmt.Sprintf("grpc on 127.0.0.1:%d", f.grpcPort),
		fmt.Sprintf("udp on 127.0.0.1:%d", f.udpPort),
		"(systemd)",
	}
	if m := missing(st["StatusText"], want...); m != "" || st["ActiveState"] != "active" {
		t.Fatalf("webapp.service %v: want active, StatusText with %q\n%s", st, m, f.journal(t))
	}
	if held := strings.Contains(st["StatusText"], "(held"); held == withCert {
		t.Fatalf("StatusText=%q: https held is %v, want %v", st["StatusText"], held, !withCert)
	}
}

// serviceBridge returns the [Service] lines that the webapp.service text
// lacks for serving TLS through reloads and restarts ("" if none).
func serviceBridge(service string) string {
	var b strings.Builder
	settings := map[string][]string{}
	for _, line := range strings.Split(service, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	if r := settings["ExecReload"]; len(r) == 0 || !strings.HasPrefix(r[len(r)-1], "+") {
		b.WriteString("ExecReload=\nExecReload=+/usr/bin/webapp reload\n")
	}
	if len(settings["LoadCredential"]) == 0 {
		b.WriteString("LoadCredential=tls.crt:" + certPath + "\nLoadCredential=tls.key:" + keyPath + "\n")
	}
	return b.String()
}

// udpPort is a port from systemdtest.Port on which a UDP socket can be
// bound too.
func udpPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		p := systemdtest.Port(t)
		c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			c.Close()
			return p
		}
	}
	t.Fatal("no port free for both TCP and UDP in 20 tries")
	return 0
}

// installCert writes the certificate and key where webapp reads them, the
// key readable by root only. Each file is renamed over the old one.
func (f *fourSockets) installCert(t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	f.box.WriteFile(t, keyPath, keyPEM, 0o600)
	f.box.WriteFile(t, certPath, certPEM, 0o644)
	out := f.box.Run(t, "stat", "-c", "%U %a", keyPath)
	if strings.TrimSpace(out) != "root 600" {
		t.Fatalf("%s is %q, want root 600", keyPath, out)
	}
}

// testCert is a self-signed certificate for 127.0.0.1 and its key.
type testCert struct {
	name            string
	certPEM, keyPEM []byte
	leaf            *x509.Certificate
}

// newTestCert makes a self-signed ECDSA certificate for 127.0.0.1, valid
// for a day, with a random serial number.
func newTestCert(t *testing.T, name string) *testCert {
	t.Helper()
	c := testcert.New(t, "webapp e2e "+name)
	return &testCert{name: name, certPEM: c.CertPEM, keyPEM: c.KeyPEM, leaf: c.Leaf}
}

// fingerprint is the SHA-256 of a certificate, in hex.
func fingerprint(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// certName names the certificate among known, by fingerprint.
func certName(c *x509.Certificate, known ...*testCert) string {
	fp := fingerprint(c)
	for _, k := range known {
		if fingerprint(k.leaf) == fp {
			return k.name
		}
	}
	if c == nil {
		return "none"
	}
	return "unknown (serial " + c.SerialNumber.String() + ")"
}

// tlsConfig trusts exactly the given certificates, for 127.0.0.1.
func tlsConfig(certs ...*testCert) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c.leaf)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// freshLeaf makes a new TLS connection to addr and returns the server's
// certificate; it never fails the test.
func freshLeaf(ctx context.Context, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// tlsAnswer is one request on a TLS client.
type tlsAnswer struct {
	Status int
	Body   string
	Proto  string
	Leaf   *x509.Certificate
	Reused bool // sent on a connection made before
	Err    error
}

// tlsGet sends GET url with c; wrote, if not nil, is called once the
// request is written. It never fails the test.
func tlsGet(ctx context.Context, c *http.Client, url string, wrote func()) tlsAnswer {
	var a tlsAnswer
	trace := &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { a.Reused = i.Reused },
		WroteRequest: func(httptrace.WroteRequestInfo) {
			if wrote != nil {
				wrote()
			}
		},
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, url, nil)
	if err != nil {
		a.Err = err
		return a
	}
	resp, err := c.Do(req)
	if err != nil {
		a.Err = err
		return a
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	a.Status, a.Body, a.Proto, a.Err = resp.StatusCode, string(b), resp.Proto, err
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		a.Leaf = resp.TLS.PeerCertificates[0]
	}
	return a
}

// tlsClient is a keep-alive HTTPS client of one connection at a time
// speaking only HTTP/1.1 (h2 false) or only HTTP/2 (h2 true).
func tlsClient(cfg *tls.Config, h2 bool) *http.Client {
	var p http.Protocols
	if h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: cfg.Clone(),
		Protocols:       &p,
		MaxConnsPerHost: 1,
	}}
}

// h2loadRun is the summary of one h2load run.
type h2loadRun struct {
	Total, Started, Done, Succeeded, Failed, Errored, Timeout int
	Status2xx                                                 int
	Protocol                                                  string // "Application protocol:"
	Output                                                    string
	Err                                                       error // h2load did not run or gave no summary
}

var (
	h2loadRequests = regexp.MustCompile(`(?m)^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout$`)
	h2loadStatus   = regexp.MustCompile(`(?m)^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx$`)
	h2loadProtocol = regexp.MustCompile(`(?m)^Application protocol: (\S+)$`)
)

// parseH2load reads h2load's summary.
func parseH2load(out string) (h2loadRun, error) {
	r := h2loadRun{Output: out}
	m := h2loadRequests.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no requests: line in h2load's output")
	}
	for i, p := range []*int{&r.Total, &r.Started, &r.Done, &r.Succeeded, &r.Failed, &r.Errored, &r.Timeout} {
		*p, _ = strconv.Atoi(m[i+1])
	}
	if m := h2loadStatus.FindStringSubmatch(out); m != nil {
		r.Status2xx, _ = strconv.Atoi(m[1])
	}
	if m := h2loadProtocol.FindStringSubmatch(out); m != nil {
		r.Protocol = m[1]
	}
	return r, nil
}

// runH2load runs h2load once, for at most a minute.
func runH2load(ctx context.Context, h2load string, args ...string) h2loadRun {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h2load, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	r, perr := parseH2load(string(out))
	switch {
	case perr != nil && err != nil:
		r.Err = fmt.Errorf("h2load %s: %v: %v", strings.Join(args, " "), err, perr)
	case perr != nil:
		r.Err = fmt.Errorf("h2load %s: %v", strings.Join(args, " "), perr)
	}
	return r
}

// h2loadTotals sums the runs of an h2load loop.
type h2loadTotals struct {
	Runs, Incomplete                                      int
	Requests, Succeeded, Failed, Errored, Timeout, Not2xx int
	Protocols                                             map[string]int
	Bad                                                   []string // the output of runs with a failure, at most 5
}

// add counts one run.
func (s *h2loadTotals) add(r h2loadRun) {
	s.Runs++
	if s.Protocols == nil {
		s.Protocols = map[string]int{}
	}
	if r.Err != nil {
		s.Incomplete++
	}
	s.Requests += r.Total
	s.Succeeded += r.Succeeded
	s.Failed += r.Failed
	s.Errored += r.Errored
	s.Timeout += r.Timeout
	s.Not2xx += r.Succeeded - r.Status2xx
	s.Protocols[r.Protocol]++
	if (r.Err != nil || r.Failed > 0 || r.Errored > 0 || r.Timeout > 0 || r.Succeeded != r.Total || r.Status2xx != r.Succeeded) && len(s.Bad) < 5 {
		detail := r.Output
		if r.Err != nil {
			detail = r.Err.Error() + "\n" + detail
		}
		s.Bad = append(s.Bad, detail)
	}
}

func (s h2loadTotals) String() string {
	return fmt.Sprintf("%d runs, %d requests, %d succeeded, %d failed, %d errored, %d timeout, %d not 2xx, %d runs without a summary, protocols %v",
		s.Runs, s.Requests, s.Succeeded, s.Failed, s.Errored, s.Timeout, s.Not2xx, s.Incomplete, s.Protocols)
}

// h2loadLoop runs short h2load runs (4 connections, 1 stream each, 1000
// requests) one after another against url until stop is closed (and at
// least one has run), ctx ends or 2000 runs have run. h2load never
// reconnects after a GOAWAY, so each run is short: a connection it holds
// is busy until its run ends, and closed then.
func h2loadLoop(ctx context.Context, h2load, url string, stop <-chan struct{}) h2loadTotals {
	var s h2loadTotals
	for s.Runs < 2000 && ctx.Err() == nil {
		s.add(runH2load(ctx, h2load, "-c", "4", "-m", "1", "-n", "1000", url))
		select {
		case <-stop:
			return s
		case <-ctx.Done():
			return s
		case <-time.After(100 * time.Millisecond): // leave the CPU to the rest now and then
		}
	}
	return s
}

// grpcClient is a gRPC client connection over h2c.
func grpcClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// healthTotals counts the health checks of a loop.
type healthTotals struct {
	Calls, Serving, NotServing, Failed int
	Errors                             []string // the first 10
}

func (h healthTotals) String() string {
	return fmt.Sprintf("%d calls, %d SERVING, %d NOT_SERVING (a draining generation), %d failed", h.Calls, h.Serving, h.NotServing, h.Failed)
}

// healthLoop calls grpc.health.v1.Health/Check on cc every 5 ms until stop
// is closed, ctx ends or 100,000 calls have been made. The calls are
// grpc-go's defaults: fail-fast, retried by grpc-go only when the server
// did not process them.
func healthLoop(ctx context.Context, cc *grpc.ClientConn, stop <-chan struct{}) healthTotals {
	var h healthTotals
	client := healthpb.NewHealthClient(cc)
	for h.Calls < 100000 && ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		h.Calls++
		switch {
		case err != nil:
			h.Failed++
			if len(h.Errors) < 10 {
				h.Errors = append(h.Errors, fmt.Sprintf("call %d at %s: %v", h.Calls, time.Now().Format("15:04:05.000"), err))
			}
		case resp.GetStatus() == healthpb.HealthCheckResponse_SERVING:
			h.Serving++
		case resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING:
			h.NotServing++
		default:
			h.Failed++
			if len(h.Errors) < 10 {
				h.Errors = append(h.Errors, fmt.Sprintf("call %d: status %v", h.Calls, resp.GetStatus()))
			}
		}
		select {
		case <-stop:
			return h
		case <-ctx.Done():
			return h
		case <-time.After(5 * time.Millisecond):
		}
	}
	return h
}

// tickAttempt is one call of webapp.v1.Ticker/Ticks.
type tickAttempt struct {
	PID      int64 // of the ticks; 0 if none came
	Ticks    int
	Complete bool   // all the ticks asked for, then the end of the stream
	Drained  bool   // ended with UNAVAILABLE "draining, retry"
	Bad      string // ended otherwise, or ticks out of order
}

func (a tickAttempt) String() string {
	switch {
	case a.Complete:
		return fmt.Sprintf("%d ticks from pid %d, complete", a.Ticks, a.PID)
	case a.Drained:
		return fmt.Sprintf("%d ticks from pid %d, then UNAVAILABLE %q", a.Ticks, a.PID, ticker.DrainMessage)
	}
	return fmt.Sprintf("%d ticks from pid %d, then %s", a.Ticks, a.PID, a.Bad)
}

// ticksOnce calls Ticks for count ticks and reads the stream to its end.
func ticksOnce(ctx context.Context, client tickerpb.TickerClient, count uint32) tickAttempt {
	var a tickAttempt
	ctx, cancel := context.WithTimeout(ctx, time.Duration(count)*ticker.Interval+30*time.Second)
	defer cancel()
	stream, err := client.Ticks(ctx, &tickerpb.TicksRequest{Count: count})
	for err == nil {
		var tick *tickerpb.Tick
		tick, err = stream.Recv()
		if err != nil {
			break
		}
		a.Ticks++
		if a.PID == 0 {
			a.PID = tick.GetPid()
		}
		if tick.GetPid() != a.PID || tick.GetSeq() != uint64(a.Ticks) {
			a.Bad = fmt.Sprintf("tick %d is seq %d from pid %d", a.Ticks, tick.GetSeq(), tick.GetPid())
			return a
		}
	}
	st := status.Convert(err)
	switch {
	case errors.Is(err, io.EOF) && a.Ticks == int(count):
		a.Complete = true
	case errors.Is(err, io.EOF):
		a.Bad = fmt.Sprintf("the stream ended after %d of %d ticks without a status", a.Ticks, count)
	case st.Code() == codes.Unavailable && st.Message() == ticker.DrainMessage:
		a.Drained = true
	default:
		a.Bad = fmt.Sprintf("%v %q", st.Code(), st.Message())
	}
	return a
}

// ticksLoop calls Ticks for count ticks again and again until stop is
// closed, ctx ends or 10,000 calls have been made, retrying at once a
// stream that ended with UNAVAILABLE, as a client should, even after stop
// until a retry brings ticks (at most 500 tries), so that every drained
// stream has a retry to check.
func ticksLoop(ctx context.Context, cc *grpc.ClientConn, count uint32, stop <-chan struct{}) []tickAttempt {
	client := tickerpb.NewTickerClient(cc)
	var attempts []tickAttempt
	retries := 0 // since the last attempt with ticks
	for len(attempts) < 10000 && ctx.Err() == nil {
		a := ticksOnce(ctx, client, count)
		attempts = append(attempts, a)
		if a.Ticks > 0 {
			retries = 0
		}
		retry := a.Drained || a.Bad != "" && a.Ticks == 0
		if retry {
			retries++
			if retries > 500 {
				return attempts
			}
		}
		stopped := false
		select {
		case <-stop:
			stopped = true
		default:
		}
		if stopped && !retry {
			return attempts
		}
		// A retry goes at once, as grpc-go's own retry policy would, after
		// a moment so as not to spin on a draining generation.
		time.Sleep(10 * time.Millisecond)
	}
	return attempts
}

// udpTotals counts a UDP sender's datagrams and their answers.
type udpTotals struct {
	Sent, Answered, Duplicates, Unanswered, Strange int
	WriteErrors, ReadErrors                         int
	ByPID                                           map[string]int
	Missing                                         []udpMiss // never answered, the first 20
	Errors                                          []string  // the first 10
}

// udpMiss is a datagram never answered.
type udpMiss struct {
	ID   int
	Sent time.Time
}

func (u udpTotals) String() string {
	return fmt.Sprintf("%d sent, %d answered once, %d answered twice or more, %d unanswered, %d answers to nothing sent, %d send errors, %d receive errors, answers by pid %v",
		u.Sent, u.Answered, u.Duplicates, u.Unanswered, u.Strange, u.WriteErrors, u.ReadErrors, u.ByPID)
}

// udpLoop sends datagrams "u<id>" with ids 1, 2, 3, ... to addr, one every
// 2 ms with at most 32 unanswered at a time, until stop is closed, ctx
// ends or 200,000 have been sent, then waits up to 10 s for the last
// answers. Each answer is "<pid> u<id>". With at most 32 waiting, the
// socket's receive buffer never overflows while no generation reads it,
// so a datagram is lost only if webapp loses it. A datagram unanswered
// after 10 s counts as unanswered.
func udpLoop(ctx context.Context, addr string, stop <-chan struct{}) udpTotals {
	u := udpTotals{ByPID: map[string]int{}}
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		u.Errors = append(u.Errors, err.Error())
		return u
	}
	conn, err := net.DialUDP("udp4", nil, raddr)
	if err != nil {
		u.Errors = append(u.Errors, err.Error())
		return u
	}
	defer conn.Close()
	conn.SetReadBuffer(1 << 20)

	var (
		mu          sync.Mutex
		outstanding = map[int]time.Time{}
		sentAt      = map[int]time.Time{} // of those not answered yet
		answers     = map[int]int{}
		answered    = make(chan struct{}, 1)
	)
	errorf := func(format string, args ...any) {
		if len(u.Errors) < 10 {
			u.Errors = append(u.Errors, fmt.Sprintf(format, args...))
		}
	}
	readerDone := make(chan struct{})
	closing := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 2048)
		for {
			conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := conn.Read(buf)
			if err != nil {
				select {
				case <-closing:
					return
				default:
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					mu.Lock()
					u.ReadErrors++
					errorf("receive: %v", err)
					mu.Unlock()
				}
				continue
			}
			pid, payload, ok := strings.Cut(string(buf[:n]), " ")
			id, err := strconv.Atoi(strings.TrimPrefix(payload, "u"))
			mu.Lock()
			switch {
			case !ok || err != nil || !strings.HasPrefix(payload, "u"):
				u.Strange++
				errorf("answer %q: not \"<pid> u<id>\"", buf[:n])
			case id < 1 || id > u.Sent:
				u.Strange++
				errorf("answer %q: no datagram %d was sent", buf[:n], id)
			default:
				answers[id]++
				u.ByPID[pid]++
				delete(outstanding, id)
				delete(sentAt, id)
			}
			mu.Unlock()
			select {
			case answered <- struct{}{}:
			default:
			}
		}
	}()

	expire := func(now time.Time) {
		for id, sent := range outstanding {
			if now.Sub(sent) > 10*time.Second {
				delete(outstanding, id)
			}
		}
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
sending:
	for {
		select {
		case <-stop:
			break sending
		case <-ctx.Done():
			break sending
		case <-tick.C:
		case <-answered:
		}
		mu.Lock()
		expire(time.Now())
		full := len(outstanding) >= 32 || u.Sent >= 200000
		mu.Unlock()
		if full {
			continue
		}
		mu.Lock()
		id := u.Sent + 1
		if _, err := conn.Write([]byte("u" + strconv.Itoa(id))); err != nil {
			u.WriteErrors++
			errorf("send u%d: %v", id, err)
		} else {
			u.Sent = id
			outstanding[id] = time.Now()
			sentAt[id] = outstanding[id]
		}
		mu.Unlock()
		select { // at most one every 2 ms
		case <-tick.C:
		case <-stop:
			break sending
		case <-ctx.Done():
			break sending
		}
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(outstanding)
		mu.Unlock()
		if n == 0 {
			break
		}
	}
	close(closing)
	<-readerDone
	for id := 1; id <= u.Sent; id++ {
		switch n := answers[id]; {
		case n == 0:
			u.Unanswered++
			if len(u.Missing) < 20 {
				u.Missing = append(u.Missing, udpMiss{ID: id, Sent: sentAt[id]})
			}
		case n == 1:
			u.Answered++
		default:
			u.Duplicates++
		}
	}
	return u
}

// cycle is one reload or restart of webapp.service under load.
type cycle struct {
	Verb          string // reload or restart
	Before, After string // MainPID
	Start         time.Time
	Took          time.Duration
	Output        string
	Err           error
}

// runCycle runs `systemctl verb webapp.service` and reads MainPID around
// it; it never fails the test.
func (s *service) runCycle(ctx context.Context, verb string) cycle {
	c := cycle{Verb: verb}
	p, err := s.showCtx(ctx, "MainPID")
	if err != nil {
		c.Err = err
		return c
	}
	c.Before = p["MainPID"]
	c.Start = time.Now()
	out, stderr, err := s.box.Exec(ctx, "systemctl", verb, "webapp.service")
	c.Took, c.Output, c.Err = time.Since(c.Start), strings.TrimSpace(out+stderr), err
	if p, err = s.showCtx(ctx, "MainPID"); err != nil {
		if c.Err == nil {
			c.Err = err
		}
		return c
	}
	c.After = p["MainPID"]
	return c
}

// connsHeldBy counts the established connections to the box's port held
// by process pid, and returns what ss printed.
func (s *service) connsHeldBy(ctx context.Context, port int, pid string) (int, string) {
	out, _, err := s.box.Exec(ctx, "ss", "-tnpH", "state", "established", fmt.Sprintf("( sport = :%d )", port))
	if err != nil {
		return 0, err.Error()
	}
	return strings.Count(out, "pid="+pid+","), strings.TrimSpace(out)
}

// waitListenerClosed polls every 100 ms until process pid no longer holds
// the listening socket on the box's port: an old generation closes its
// copy as it starts to drain, which may be just after the reload command
// has returned, and until then it may still accept a connection.
func (s *service) waitListenerClosed(ctx context.Context, within time.Duration, port int, pid string) error {
	deadline := time.Now().Add(within)
	for {
		out, _, err := s.box.Exec(ctx, "ss", "-tlnpH", fmt.Sprintf("( sport = :%d )", port))
		if err != nil {
			return err
		}
		if !strings.Contains(out, "pid="+pid+",") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v pid %s still holds the listening socket on port %d: %s", within, pid, port, strings.TrimSpace(out))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nearest says which cycle began nearest to when, and how long before
// or after it.
func nearest(cycles []cycle, when time.Time) string {
	best := -1
	for i, c := range cycles {
		if best < 0 || absDuration(when.Sub(c.Start)) < absDuration(when.Sub(cycles[best].Start)) {
			best = i
		}
	}
	if best < 0 {
		return "no reload or restart"
	}
	c := cycles[best]
	return fmt.Sprintf("%v after the start of %s %d (MainPID %s -> %s, took %v)",
		when.Sub(c.Start).Round(time.Millisecond), c.Verb, best, c.Before, c.After, c.Took.Round(time.Millisecond))
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
