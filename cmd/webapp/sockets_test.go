package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/ticker"
	"github.com/baton-dev/baton/internal/ticker/tickerpb"
	"github.com/baton-dev/baton/systemd/notifytest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// listenPIDScript makes the shell's own pid the LISTEN_PID before it execs
// webapp in the same process, as systemd sets it for the process it
// starts: "$0" is webapp and "$@" its arguments.
const listenPIDScript = `export LISTEN_PID=$$; exec "$0" "$@"`

// testSocket is a socket the test binds and passes, as systemd would, by
// name; the test keeps its own copy open as systemd does.
type testSocket struct {
	name string
	addr string
	file *os.File
}

func tcpSocket(t *testing.T, name string) testSocket {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return testSocket{name: name, addr: ln.Addr().String(), file: f}
}

func udpSocket(t *testing.T, name string) testSocket {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	f, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return testSocket{name: name, addr: pc.LocalAddr().String(), file: f}
}

// allSockets are webapp's four sockets, in the order passed.
func allSockets(t *testing.T) []testSocket {
	return []testSocket{tcpSocket(t, "http"), tcpSocket(t, "https"), tcpSocket(t, "grpc"), udpSocket(t, "udp")}
}

func addrOf(socks []testSocket, name string) string {
	for _, s := range socks {
		if s.name == name {
			return s.addr
		}
	}
	return ""
}

// activate makes cmd start under /bin/sh with LISTEN_PID set to its own
// pid, and the sockets as descriptors 3, 4, ... with LISTEN_FDS and
// LISTEN_FDNAMES: the protocol systemd follows.
func activate(cmd *exec.Cmd, socks []testSocket) {
	var names []string
	for _, s := range socks {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.file)
		names = append(names, s.name)
	}
	cmd.Args = append([]string{"/bin/sh", "-c", listenPIDScript, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = "/bin/sh"
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(socks)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "webapp test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a PEM certificate for 127.0.0.1 with this serial number,
// signed by the CA, and its PEM key.
func (ca *testCA) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "webapp test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// writePair writes tls.crt and tls.key into dir (nil: not written) and
// returns their paths.
func writePair(t *testing.T, dir string, certPEM, keyPEM []byte) (certPath, keyPath string) {
	t.Helper()
	return writeNamed(t, dir, certName, keyName, certPEM, keyPEM)
}

// writeCreds writes them as systemd's LoadCredential=tls:/etc/webapp
// names them in $CREDENTIALS_DIRECTORY.
func writeCreds(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	writeNamed(t, dir, certCredName, keyCredName, certPEM, keyPEM)
}

func writeNamed(t *testing.T, dir, cert, key string, certPEM, keyPEM []byte) (certPath, keyPath string) {
	t.Helper()
	certPath, keyPath = filepath.Join(dir, cert), filepath.Join(dir, key)
	if certPEM != nil {
		if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if keyPEM != nil {
		if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath
}

// noCertFlags point --tls-cert and --tls-key at files that do not exist,
// so that the machine's /etc/webapp plays no part.
func noCertFlags(t *testing.T) []string {
	dir := filepath.Join(t.TempDir(), "none")
	return []string{"--tls-cert", filepath.Join(dir, certName), "--tls-key", filepath.Join(dir, keyName)}
}

// reap is the test binary as a subreaper, as systemd is for a service:
// it starts args with the WEBAPP_TEST_REAPER_FDS descriptors from 3 on
// that it was given, writes "start PID" on stdout, then "exit PID CODE"
// (or "signal PID NAME") for every process that ends under it, its child
// and the generations that child starts on reloads and leaves behind,
// until none is left.
func reap(args []string) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "reaper: %v\n", err)
		return 1
	}
	n, _ := strconv.Atoi(os.Getenv("WEBAPP_TEST_REAPER_FDS"))
	os.Unsetenv("WEBAPP_TEST_REAPER")
	os.Unsetenv("WEBAPP_TEST_REAPER_FDS")
	files := []uintptr{0, 1, 2}
	for i := 0; i < n; i++ {
		files = append(files, uintptr(3+i))
	}
	pid, err := syscall.ForkExec(args[0], args, &syscall.ProcAttr{Env: os.Environ(), Files: files})
	if err != nil {
		fmt.Fprintf(os.Stderr, "reaper: %v\n", err)
		return 1
	}
	fmt.Printf("start %d\n", pid)
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.ECHILD):
			return 0
		case err != nil:
			fmt.Fprintf(os.Stderr, "reaper: wait4: %v\n", err)
			return 1
		case ws.Signaled():
			fmt.Printf("signal %d %s\n", pid, ws.Signal())
		case ws.Exited():
			fmt.Printf("exit %d %d\n", pid, ws.ExitStatus())
		}
	}
}

// reaped is webapp started by the reaper, through every generation.
type reaped struct {
	cmd    *exec.Cmd
	first  int
	stderr *syncBuffer

	mu    sync.Mutex
	ends  map[int]string // pid: "exit CODE" or "signal NAME"
	known map[int]bool   // every generation seen
	note  chan struct{}  // closed and renewed at every end
	done  chan struct{}  // the reaper has exited
}

// startReaped starts the built webapp with args under the reaper, with the
// sockets passed by LISTEN_FDS, and returns once it has started.
func startReaped(t *testing.T, socks []testSocket, env []string, args ...string) *reaped {
	t.Helper()
	r := &reaped{stderr: &syncBuffer{}, ends: map[int]string{}, known: map[int]bool{}, note: make(chan struct{}), done: make(chan struct{})}
	r.cmd = exec.Command(builtWebapp(t), args...)
	r.cmd.Env = append(os.Environ(), env...)
	activate(r.cmd, socks)
	// The reaper runs the shell that activate set up.
	r.cmd.Args = append([]string{os.Args[0], "--"}, r.cmd.Args...)
	r.cmd.Path = os.Args[0]
	r.cmd.Env = append(r.cmd.Env, "WEBAPP_TEST_REAPER=1", "WEBAPP_TEST_REAPER_FDS="+strconv.Itoa(len(socks)))
	r.cmd.Stderr = r.stderr
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan int, 1)
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 {
				continue
			}
			pid, _ := strconv.Atoi(f[1])
			switch {
			case f[0] == "start":
				started <- pid
			case len(f) == 3:
				r.mu.Lock()
				r.ends[pid] = f[0] + " " + f[2]
				close(r.note)
				r.note = make(chan struct{})
				r.mu.Unlock()
			}
		}
		r.cmd.Wait()
	}()
	t.Cleanup(func() {
		r.mu.Lock()
		for pid := range r.known {
			if _, ended := r.ends[pid]; !ended {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		r.mu.Unlock()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("webapp log:\n%s", r.stderr.String())
		}
	})
	select {
	case r.first = <-started:
		r.saw(r.first)
	case <-r.done:
		t.Fatalf("the reaper exited: %s", r.stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("the reaper did not start webapp within 10 s")
	}
	return r
}

// saw records a generation's pid, to be killed if the test ends early.
func (r *reaped) saw(pid int) {
	r.mu.Lock()
	r.known[pid] = true
	r.mu.Unlock()
}

// wait returns how pid ended ("exit 0", "signal killed", ...), failing
// the test after within.
func (r *reaped) wait(t *testing.T, pid int, within time.Duration) string {
	t.Helper()
	deadline := time.After(within)
	for {
		r.mu.Lock()
		end, ok := r.ends[pid]
		note := r.note
		r.mu.Unlock()
		if ok {
			return end
		}
		select {
		case <-note:
		case <-deadline:
			t.Fatalf("pid %d still running after %v", pid, within)
		}
	}
}

// h2cClient speaks HTTP/2 without TLS (prior knowledge) and nothing else.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &p}}
}

// tlsClient trusts only the CA and offers h2 and http/1.1.
func tlsClient(ca *testCA) *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Protocols:       &p,
		TLSClientConfig: &tls.Config{RootCAs: ca.pool},
	}}
}

// getPID does GET url and checks the answer; it returns the pid that
// answered and the response.
func getPID(t *testing.T, c *http.Client, url string) (int, *http.Response) {
	t.Helper()
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "hello world\n" {
		t.Fatalf("GET %s = %d %q, %v; want 200 hello world", url, resp.StatusCode, body, err)
	}
	pid, _ := strconv.Atoi(resp.Header.Get("X-Webapp-Pid"))
	return pid, resp
}

func grpcConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// udpAsk sends payload to addr and returns the answer; a datagram may be
// lost, so it asks up to five times.
func udpAsk(t *testing.T, addr, payload string) string {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for try := 0; ; try++ {
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
		if try == 4 {
			t.Fatalf("udp %s: no answer to %q in five tries: %v", addr, payload, err)
		}
	}
}

// checkHTTP checks the http socket: HTTP/2 over h2c from pid.
func checkHTTP(t *testing.T, addr string, pid int) {
	t.Helper()
	got, resp := getPID(t, h2cClient(), "http://"+addr+"/")
	if resp.ProtoMajor != 2 {
		t.Errorf("http socket over h2c: %s, want HTTP/2", resp.Proto)
	}
	if got != pid {
		t.Errorf("http socket answered from pid %d, want %d", got, pid)
	}
}

// checkHTTPS checks the https socket: h2 by ALPN, the certificate with
// this serial number, from pid.
func checkHTTPS(t *testing.T, addr string, ca *testCA, serial int64, pid int) {
	t.Helper()
	got, resp := getPID(t, tlsClient(ca), "https://"+addr+"/")
	if resp.TLS == nil {
		t.Fatalf("https socket: %s without TLS", resp.Proto)
	}
	if resp.ProtoMajor != 2 || resp.TLS.NegotiatedProtocol != "h2" {
		t.Errorf("https socket: %s, ALPN %q, want HTTP/2 by ALPN h2", resp.Proto, resp.TLS.NegotiatedProtocol)
	}
	if s := resp.TLS.PeerCertificates[0].SerialNumber; s.Int64() != serial {
		t.Errorf("https socket served certificate %v, want %d", s, serial)
	}
	if resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("https socket: TLS version %x, want 1.2 or later", resp.TLS.Version)
	}
	if got != pid {
		t.Errorf("https socket answered from pid %d, want %d", got, pid)
	}
}

// checkGRPC checks the grpc socket: health SERVING, reflection lists the
// services and knows webapp.v1.Ticker, and three ticks from pid.
func checkGRPC(t *testing.T, addr string, pid int) {
	t.Helper()
	cc := grpcConn(t, addr)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, svc := range []string{"", "webapp.v1.Ticker"} {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("grpc Health.Check(%q) = %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}

	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	lr, err := rs.Recv()
	if err != nil {
		t.Fatalf("reflection ListServices: %v", err)
	}
	var names []string
	for _, s := range lr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "webapp.v1.Ticker"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "webapp.v1.Ticker"}}); err != nil {
		t.Fatal(err)
	}
	fr, err := rs.Recv()
	if err != nil || len(fr.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection FileContainingSymbol(webapp.v1.Ticker) = %v, %v; want its file", fr.GetErrorResponse(), err)
	}
	rs.CloseSend()

	stream, err := tickerpb.NewTickerClient(cc).Ticks(ctx, &tickerpb.TicksRequest{Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); ; want++ {
		tick, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if want != 4 {
				t.Errorf("Ticks(count 3) ended after %d ticks", want-1)
			}
			break
		}
		if err != nil {
			t.Fatalf("Ticks(count 3): tick %d: %v", want, err)
		}
		if tick.GetSeq() != want || tick.GetPid() != int64(pid) {
			t.Errorf("Ticks(count 3): tick %d = seq %d from pid %d, want seq %d from %d", want, tick.GetSeq(), tick.GetPid(), want, pid)
		}
	}
}

// checkUDP checks the udp socket: "<pid> payload".
func checkUDP(t *testing.T, addr string, pid int) {
	t.Helper()
	payload := fmt.Sprintf("datagram to %d", pid)
	if got, want := udpAsk(t, addr, payload), strconv.Itoa(pid)+" "+payload; got != want {
		t.Errorf("udp socket answered %q, want %q", got, want)
	}
}

// TestFourSocketsActivated passes webapp all four sockets by name, as
// systemd does, and checks each with a real client: HTTP/2 over h2c,
// HTTPS with h2 by ALPN, gRPC health, reflection and a stream, UDP. Then
// SIGHUP: a new generation serves all four, the long gRPC streams of the
// old one end with UNAVAILABLE and their retry lands on the new one, the
// old one exits 0. Then SIGTERM: the new generation drains and exits 0.
func TestFourSocketsActivated(t *testing.T) {
	socks := allSockets(t)
	ca := newTestCA(t)
	creds := t.TempDir()
	certPEM, keyPEM := ca.issue(t, 42)
	writeCreds(t, creds, certPEM, keyPEM)
	notify := notifytest.Listen(t)
	args := append([]string{"serve", "--listen", "127.0.0.1:1", "--drain-timeout", "10s"}, noCertFlags(t)...)
	r := startReaped(t, socks, []string{"CREDENTIALS_DIRECTORY=" + creds, "NOTIFY_SOCKET=" + notify.Addr()}, args...)
	httpAddr, httpsAddr, grpcAddr, udpAddr := addrOf(socks, "http"), addrOf(socks, "https"), addrOf(socks, "grpc"), addrOf(socks, "udp")

	ready, i := notify.WaitFor(t, 0, "READY=1", 20*time.Second)
	st, _ := ready.Get("STATUS")
	for _, s := range socks {
		if !strings.Contains(st, s.name+" on "+s.addr) {
			t.Errorf("STATUS=%q, want it to name %s on %s", st, s.name, s.addr)
		}
	}
	if !strings.Contains(st, "(systemd)") || strings.Contains(st, "held") {
		t.Errorf("STATUS=%q, want all four served, from systemd", st)
	}
	old := r.first
	checkHTTP(t, httpAddr, old)
	checkHTTPS(t, httpsAddr, ca, 42, old)
	checkGRPC(t, grpcAddr, old)
	checkUDP(t, udpAddr, old)

	// Long-lived streams across the reload: ticks without end, and a
	// health watch.
	cc := grpcConn(t, grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ticks, err := tickerpb.NewTickerClient(cc).Ticks(ctx, &tickerpb.TicksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if tick, err := ticks.Recv(); err != nil || tick.GetPid() != int64(old) {
		t.Fatalf("endless Ticks: first tick %v, %v; want one from %d", tick, err, old)
	}
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Health.Watch: first %v, %v; want SERVING", m.GetStatus(), err)
	}

	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The endless stream ends at the old generation's drain, with the
	// status a client retries.
	for {
		tick, err := ticks.Recv()
		if err == nil {
			if tick.GetPid() != int64(old) {
				t.Fatalf("a tick from pid %d on the old generation's stream", tick.GetPid())
			}
			continue
		}
		if s := status.Convert(err); s.Code() != codes.Unavailable || s.Message() != ticker.DrainMessage {
			t.Fatalf("the endless stream ended with %v, want Unavailable %q", err, ticker.DrainMessage)
		}
		break
	}
	// The watch says NOT_SERVING, then ends the same way.
	var seen []healthpb.HealthCheckResponse_ServingStatus
	for {
		m, err := watch.Recv()
		if err == nil {
			seen = append(seen, m.GetStatus())
			continue
		}
		if status.Code(err) != codes.Unavailable {
			t.Errorf("Health.Watch ended with %v, want Unavailable", err)
		}
		break
	}
	if len(seen) == 0 || seen[len(seen)-1] != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Health.Watch said %v at the drain, want NOT_SERVING last", seen)
	}
	// The retry lands on the new generation (a retry may still meet the
	// old one going away: retry as a client does, a bounded number of
	// times).
	var next int
	for try := 0; next == 0; try++ {
		s, err := tickerpb.NewTickerClient(cc).Ticks(ctx, &tickerpb.TicksRequest{Count: 2})
		if err == nil {
			var tick *tickerpb.Tick
			if tick, err = s.Recv(); err == nil {
				next = int(tick.GetPid())
				break
			}
		}
		if status.Code(err) != codes.Unavailable || try == 100 {
			t.Fatalf("Ticks retried after the drain: %v (try %d), want ticks from the new generation", err, try)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.saw(next)
	if next == old {
		t.Fatalf("the retried stream ticks from the old pid %d", old)
	}
	if end := r.wait(t, old, 30*time.Second); end != "exit 0" {
		t.Errorf("the old generation, handed over: %s, want exit 0", end)
	}
	if m, _ := notify.WaitFor(t, i, "MAINPID="+strconv.Itoa(next), 10*time.Second); !m.Has("READY=1") {
		t.Errorf("the new generation's MAINPID= came without READY=1: %v", m)
	}
	checkHTTP(t, httpAddr, next)
	checkHTTPS(t, httpsAddr, ca, 42, next)
	checkGRPC(t, grpcAddr, next)
	checkUDP(t, udpAddr, next)
	cc.Close()

	if err := syscall.Kill(next, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if end := r.wait(t, next, 30*time.Second); end != "exit 0" {
		t.Errorf("the new generation, on SIGTERM: %s, want exit 0", end)
	}
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Errorf("a process is left under the reaper 10 s after the last generation exited")
	}
	if log := r.stderr.String(); strings.Contains(log, "level=error") || strings.Contains(log, "connections cut") {
		t.Errorf("errors or cut connections in the log:\n%s", log)
	}
}

// TestHTTPSHeldWithoutCertificate: the https socket is passed but no
// certificate exists anywhere: webapp holds the socket, says why once,
// and serves the other three.
func TestHTTPSHeldWithoutCertificate(t *testing.T) {
	socks := allSockets(t)
	notify := notifytest.Listen(t)
	c := &child{stderr: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = webappCmd(t, []string{"NOTIFY_SOCKET=" + notify.Addr(), "CREDENTIALS_DIRECTORY=" + t.TempDir()},
		append([]string{"serve", "--listen", "127.0.0.1:1"}, noCertFlags(t)...)...)
	activate(c.cmd, socks)
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("webapp log:\n%s", c.stderr.String())
		}
	})
	ready, _ := notify.WaitFor(t, 0, "READY=1", 20*time.Second)
	st, _ := ready.Get("STATUS")
	if want := "https on " + addrOf(socks, "https") + " (held, not served)"; !strings.Contains(st, want) {
		t.Errorf("STATUS=%q, want %q in it", st, want)
	}
	pid := c.cmd.Process.Pid
	checkHTTP(t, addrOf(socks, "http"), pid)
	checkGRPC(t, addrOf(socks, "grpc"), pid)
	checkUDP(t, addrOf(socks, "udp"), pid)
	c.signal(t, syscall.SIGTERM)
	if code := c.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	log := c.stderr.String()
	if n := strings.Count(log, "no TLS certificate"); n != 1 {
		t.Errorf("the log says %d times that there is no TLS certificate, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "holding the socket without serving it") || !strings.Contains(log, "none of ") {
		t.Errorf("the log does not say that https is held, and why:\n%s", log)
	}
}

// TestActivationBadInput: a bad socket or a bad certificate stops webapp
// at start, with exit 1, a message naming what is wrong, and no READY=1.
func TestActivationBadInput(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 1)
	_, otherKey := ca.issue(t, 2)
	tests := []struct {
		name  string
		socks func(t *testing.T) []testSocket
		// certs writes the certificate files into dir and returns the
		// --tls-cert and --tls-key flags and environment to use.
		certs func(t *testing.T, dir string) (args, env []string)
		want  []string // {dir} is where certs wrote the files
	}{
		{
			name:  "unexpected name",
			socks: func(t *testing.T) []testSocket { return []testSocket{tcpSocket(t, "http"), tcpSocket(t, "admin")} },
			want:  []string{`fd 4 "admin": unexpected name: asked for "http", "https", "grpc", "udp"`},
		},
		{
			name:  "udp socket named http",
			socks: func(t *testing.T) []testSocket { return []testSocket{udpSocket(t, "http")} },
			want:  []string{`fd 3 "http": not a listening stream socket`},
		},
		{
			name:  "tcp socket named udp",
			socks: func(t *testing.T) []testSocket { return []testSocket{tcpSocket(t, "http"), tcpSocket(t, "udp")} },
			want:  []string{`fd 4 "udp": not a datagram socket`},
		},
		{
			name:  "missing http",
			socks: func(t *testing.T) []testSocket { return []testSocket{tcpSocket(t, "grpc")} },
			want:  []string{`"http": missing`},
		},
		{
			name: "key does not match the certificate",
			certs: func(t *testing.T, dir string) ([]string, []string) {
				c, k := writePair(t, dir, certPEM, otherKey)
				return []string{"--tls-cert", c, "--tls-key", k}, nil
			},
			want: []string{"TLS key {dir}/tls.key with certificate {dir}/tls.crt: private key does not match public key"},
		},
		{
			name: "garbled certificate in the credentials",
			certs: func(t *testing.T, dir string) ([]string, []string) {
				writeCreds(t, dir, []byte("not a certificate\n"), keyPEM)
				return noCertFlags(t), []string{"CREDENTIALS_DIRECTORY=" + dir}
			},
			want: []string{"TLS certificate {dir}/tls_tls.crt: no PEM CERTIFICATE block"},
		},
		{
			name: "key without its certificate",
			certs: func(t *testing.T, dir string) ([]string, []string) {
				c, k := writePair(t, dir, nil, keyPEM)
				return []string{"--tls-cert", c, "--tls-key", k}, nil
			},
			want: []string{"TLS certificate {dir}/tls.crt not found, but its key {dir}/tls.key is there: both or neither"},
		},
		{
			name: "unreadable key",
			certs: func(t *testing.T, dir string) ([]string, []string) {
				c, k := writePair(t, dir, certPEM, nil)
				if err := os.Mkdir(k, 0o700); err != nil {
					t.Fatal(err)
				}
				return []string{"--tls-cert", c, "--tls-key", k}, nil
			},
			want: []string{"TLS file {dir}/tls.key: is a directory"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			args, env := noCertFlags(t), []string(nil)
			socks := []testSocket{tcpSocket(t, "http"), tcpSocket(t, "https")}
			if tt.certs != nil {
				args, env = tt.certs(t, dir)
			}
			if tt.socks != nil {
				socks = tt.socks(t)
			}
			notify := notifytest.Listen(t)
			env = append(env, "NOTIFY_SOCKET="+notify.Addr())
			cmd := webappCmd(t, env, append([]string{"serve", "--listen", "127.0.0.1:1"}, args...)...)
			activate(cmd, socks)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			go func() { <-ctx.Done(); cmd.Process.Kill() }()
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("exit %d (%v), want 1", code, err)
			}
			// The log's text format quotes the message.
			said := strings.ReplaceAll(stderr.String(), `\"`, `"`)
			for _, want := range tt.want {
				want = strings.ReplaceAll(want, "{dir}", dir)
				if !strings.Contains(said, want) {
					t.Errorf("stderr = %q, want it to say %q", said, want)
				}
			}
			for _, m := range notify.Messages() {
				if m.Has("READY=1") {
					t.Errorf("READY=1 sent by a webapp that failed to start")
				}
			}
		})
	}
}

// TestH2loadOverH2C: h2load, HTTP/2 with prior knowledge, completes every
// request on the http socket.
func TestH2loadOverH2C(t *testing.T) {
	h2load := requireTool(t, "h2load", "nghttp2-client")
	c := startWebapp(t, nil)
	out, err := exec.Command(h2load, "-n", "100", "-c", "4", "http://"+c.addr+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("h2load: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "100 succeeded, 0 failed, 0 errored") {
		t.Errorf("h2load -n 100 -c 4 over h2c:\n%s\nwant 100 succeeded, 0 failed, 0 errored", out)
	}
}
