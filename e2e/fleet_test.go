package e2e

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// fleetShutdownDelay is the fleet's --shutdown-delay for the maintenance
// stop: HAProxy below checks every 500 ms and marks a server down after 3
// failed checks (its default fall), so 1.5 s after /readyz turned 503 at
// the latest; the rest is margin.
const fleetShutdownDelay = 2 * time.Second

// fleet is three webapp instances in one box, each the instance
// webapp@PORT of template units made from the shipped ones.
type fleet struct {
	box   *systemdtest.Box
	ports []int
}

// templateUnits turns the shipped webapp.socket and webapp.service into
// instance templates whose instance name is the port: the socket listens
// on 127.0.0.1:%i, the service takes it and has its own runtime directory
// (and so its own control socket for `webapp reload`).
func templateUnits(t *testing.T) (socket, service []byte) {
	t.Helper()
	sock := string(unit(t, "webapp.socket"))
	svc := string(unit(t, "webapp.service"))
	for _, r := range []struct {
		s        *string
		old, new string
	}{
		{&sock, "ListenStream=127.0.0.1:8080", "ListenStream=127.0.0.1:%i"},
		{&svc, "Requires=webapp.socket", "Requires=webapp@%i.socket"},
		{&svc, "After=webapp.socket", "After=webapp@%i.socket"},
		{&svc, "RuntimeDirectory=webapp", "RuntimeDirectory=webapp-%i"},
		{&svc, "Also=webapp.socket", "Also=webapp@%i.socket"},
	} {
		if !strings.Contains(*r.s, r.old+"\n") {
			t.Fatalf("the shipped unit has no line %q to make a template of", r.old)
		}
		*r.s = strings.Replace(*r.s, r.old+"\n", r.new+"\n", 1)
	}
	return []byte(sock), []byte(svc)
}

func startFleet(t *testing.T) *fleet {
	t.Helper()
	box := systemdtest.Boot(t, systemdtest.Options{})
	f := &fleet{box: box}
	box.CopyFile(t, buildWebapp(t, ""), "/usr/bin/webapp", 0o755)
	sock, svc := templateUnits(t)
	box.WriteFile(t, "/etc/systemd/system/webapp@.socket", sock, 0o644)
	box.WriteFile(t, "/etc/systemd/system/webapp@.service", svc, 0o644)
	box.Systemctl(t, "daemon-reload")
	for range 3 {
		p := systemdtest.Port(t)
		f.ports = append(f.ports, p)
		box.Systemctl(t, "start", f.socket(p))
	}
	return f
}

func (f *fleet) socket(port int) string  { return fmt.Sprintf("webapp@%d.socket", port) }
func (f *fleet) service(port int) string { return fmt.Sprintf("webapp@%d.service", port) }

// setDelay sets --shutdown-delay for every instance through WEBAPP_OPTS in
// a drop-in, and restarts them (no load runs) so that it takes effect.
func (f *fleet) setDelay(t *testing.T, d time.Duration) {
	t.Helper()
	f.box.WriteFile(t, "/etc/systemd/system/webapp@.service.d/delay.conf",
		[]byte(fmt.Sprintf("[Service]\nEnvironment=WEBAPP_OPTS=--shutdown-delay=%v\n", d)), 0o644)
	f.box.Systemctl(t, "daemon-reload")
	for _, p := range f.ports {
		f.box.Systemctl(t, "restart", f.service(p))
	}
}

// systemctl runs systemctl in the box for a load schedule: an error, not
// a test failure.
func (f *fleet) systemctl(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, stderr, err := f.box.Exec(ctx, append([]string{"systemctl"}, args...)...)
	if err != nil {
		return fmt.Errorf("%w: %s", err, stderr)
	}
	return nil
}

// balancer is a load balancer process run by the test in front of the
// fleet.
type balancer struct {
	name string
	url  string
	dir  string
	// up reports how many servers the balancer counts as up ("" if it
	// cannot tell).
	up func() (int, error)
}

func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s not found (Debian package %s): `make deps` installs it", name, pkg)
	}
	t.Skipf("%s not found: install Debian package %s (`sudo make deps`) to run this test", name, pkg)
	return ""
}

// runBalancer starts argv in the foreground, ends it at the end of the
// test, and waits until it accepts on port.
func runBalancer(t *testing.T, b *balancer, port int, argv ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(b.dir, "output"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", b.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			out, _ := os.ReadFile(filepath.Join(b.dir, "output"))
			t.Logf("%s's output:\n%s", b.name, out)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			out, _ := os.ReadFile(filepath.Join(b.dir, "output"))
			t.Fatalf("%s exited at start:\n%s", b.name, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not accepting on %d within 10 s", b.name, port)
		}
	}
}

// startHAProxy runs HAProxy in front of the fleet: keep-alive on both
// sides, a health check of GET /readyz every 500 ms (down after 3 failed
// checks, up after 2 good ones), and the defaults otherwise (3 retries on
// the same server for a failed connection, no redispatch).
func startHAProxy(t *testing.T, f *fleet) *balancer {
	t.Helper()
	bin := requireTool(t, "haproxy", "haproxy")
	dir := t.TempDir()
	port := systemdtest.Port(t)
	b := &balancer{name: "haproxy", url: fmt.Sprintf("http://127.0.0.1:%d/", port), dir: dir}
	stats := filepath.Join(dir, "admin.sock")
	var servers strings.Builder
	for i, p := range f.ports {
		fmt.Fprintf(&servers, "    server w%d 127.0.0.1:%d check\n", i, p)
	}
	cfg := fmt.Sprintf(`global
    maxconn 4096
    stats socket %s mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
frontend fleet
    bind 127.0.0.1:%d
    default_backend webapp
backend webapp
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fall 3 rise 2
%s`, stats, port, servers.String())
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	runBalancer(t, b, port, bin, "-db", "-f", path)
	b.up = func() (int, error) { return haproxyUp(stats) }
	return b
}

// haproxyUp counts the servers of backend webapp that HAProxy has UP,
// from `show stat` on its stats socket.
func haproxyUp(sock string) (int, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("show stat\n")); err != nil {
		return 0, err
	}
	r := csv.NewReader(bufio.NewReader(c))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return 0, err
	}
	up, status := 0, -1
	for _, rec := range recs {
		if len(rec) > 0 && strings.HasPrefix(rec[0], "# ") {
			rec[0] = strings.TrimPrefix(rec[0], "# ")
			for i, h := range rec {
				if h == "status" {
					status = i
				}
			}
			continue
		}
		if status < 0 || len(rec) <= status || rec[0] != "webapp" || rec[1] == "BACKEND" {
			continue
		}
		if rec[status] == "UP" {
			up++
		}
	}
	return up, nil
}

// startNginx runs nginx in front of the fleet: keep-alive to the clients
// and to the upstreams, proxy_next_upstream left at its default (error
// timeout: a failed connection is tried on the next server).
func startNginx(t *testing.T, f *fleet) *balancer {
	t.Helper()
	bin := requireTool(t, "nginx", "nginx-light")
	dir := t.TempDir()
	port := systemdtest.Port(t)
	b := &balancer{name: "nginx", url: fmt.Sprintf("http://127.0.0.1:%d/", port), dir: dir}
	var servers strings.Builder
	for _, p := range f.ports {
		fmt.Fprintf(&servers, "        server 127.0.0.1:%d;\n", p)
	}
	cfg := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream webapp {
%[2]s        keepalive 64;
    }
    server {
        listen 127.0.0.1:%[3]d;
        location / {
            proxy_pass http://webapp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, dir, servers.String(), port)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	runBalancer(t, b, port, bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path, "-g", "daemon off;")
	return b
}

// waitUp waits until the balancer counts n servers up.
func (b *balancer) waitUp(ctx context.Context, n int) error {
	if b.up == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		got, err := b.up()
		if err == nil && got == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %d of the servers up (%v), want %d", b.name, got, err, n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fleetRun is one scenario under load through a balancer.
type fleetRun struct {
	name string
	b    *balancer
	// steps is the number of disruptions; step i acts on instance i % 3.
	steps int
	step  func(ctx context.Context, port int) error
	// contrast: the run must fail some requests.
	contrast bool
}

// run sends 64 keep-alive clients through the balancer while the steps
// run one after another, and checks the failures.
func (f *fleet) run(t *testing.T, r fleetRun) *load.Result {
	t.Helper()
	if err := r.b.waitUp(context.Background(), len(f.ports)); err != nil {
		t.Fatalf("%s before the run: %v", r.name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := load.Run(ctx, r.b.url, load.Options{
		Clients:     64,
		Mode:        load.KeepAlive,
		Duration:    2 * time.Minute, // a bound: Tail ends the load
		MaxRequests: 5_000_000,
		MaxSamples:  -1,
		Timeout:     10 * time.Second,
		Tail:        time.Second,
		Schedule: load.Schedule{Start: time.Second, Count: r.steps, Run: func(ctx context.Context, i int) error {
			return r.step(ctx, f.ports[i%len(f.ports)])
		}},
	})
	if err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	for _, ev := range res.Events {
		if ev.Err != nil {
			t.Fatalf("%s: step %d: %v", r.name, ev.Index, ev.Err)
		}
	}
	if len(res.Events) != r.steps {
		t.Fatalf("%s: %d steps ran, want %d", r.name, len(res.Events), r.steps)
	}
	t.Logf("%s through %s: %d requests, %d ok, %d failed %+v, %d pids answered, %.0f req/s, %v",
		r.name, r.b.name, res.Requests, res.OK, res.Failed(), res.Failures, len(res.PIDs), res.RPS, res.Elapsed.Round(time.Millisecond))
	switch {
	case res.OK == 0:
		t.Errorf("%s: no request answered", r.name)
	case r.contrast && res.Failed() == 0:
		t.Errorf("%s (the contrast): 0 of %d requests failed, want some: without the delay the port closes before the balancer takes the instance out", r.name, res.Requests)
	case !r.contrast && res.Failed() != 0:
		t.Errorf("%s through %s: %d of %d requests failed (%+v; first: %v), want none", r.name, r.b.name, res.Failed(), res.Requests, res.Failures, res.FailureDetails[:min(5, len(res.FailureDetails))])
	}
	return res
}

// TestFleet: three webapp instances behind a real load balancer, under 64
// keep-alive clients that never retry. Through HAProxy (health check GET
// /readyz every 500 ms): a rolling `systemctl reload` of the three, twice;
// a rolling `systemctl restart`; a rolling maintenance stop (socket and
// service, so that the port closes), wait, start, with --shutdown-delay
// set so that readiness takes each instance out first: none of them fails
// a request. The same maintenance without the delay is the contrast and
// must fail some. Through nginx (proxy_next_upstream at its default): the
// rolling reload and restart fail none.
func TestFleet(t *testing.T) {
	f := startFleet(t)
	h := startHAProxy(t, f)
	up := func(b *balancer) func(context.Context) error {
		return func(ctx context.Context) error { return b.waitUp(ctx, len(f.ports)) }
	}
	reload := func(ctx context.Context, port int) error { return f.systemctl(ctx, "reload", f.service(port)) }
	restart := func(b *balancer) func(context.Context, int) error {
		return func(ctx context.Context, port int) error {
			if err := f.systemctl(ctx, "restart", f.service(port)); err != nil {
				return err
			}
			return up(b)(ctx) // before the next one goes
		}
	}
	// Maintenance: the port closes (socket and service stopped), stays
	// closed a while, opens again, and the balancer has it back before
	// the next instance goes.
	maintenance := func(ctx context.Context, port int) error {
		if err := f.systemctl(ctx, "stop", f.socket(port), f.service(port)); err != nil {
			return err
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second); err == nil {
			c.Close()
			return fmt.Errorf("port %d still accepts after the stop, want it closed (host maintenance)", port)
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := f.systemctl(ctx, "start", f.socket(port)); err != nil {
			return err
		}
		return up(h)(ctx)
	}

	f.run(t, fleetRun{name: "rolling reload ×2", b: h, steps: 6, step: reload})
	f.run(t, fleetRun{name: "rolling restart", b: h, steps: 3, step: restart(h)})
	f.setDelay(t, fleetShutdownDelay)
	f.run(t, fleetRun{name: fmt.Sprintf("rolling maintenance stop, --shutdown-delay=%v", fleetShutdownDelay), b: h, steps: 3, step: maintenance})
	f.setDelay(t, 0)
	f.run(t, fleetRun{name: "rolling maintenance stop, --shutdown-delay=0 (contrast)", b: h, steps: 3, step: maintenance, contrast: true})

	n := startNginx(t, f)
	// nginx has no health state to wait for: give each restarted instance
	// a moment to serve before the next goes.
	nginxRestart := func(ctx context.Context, port int) error {
		if err := f.systemctl(ctx, "restart", f.service(port)); err != nil {
			return err
		}
		select {
		case <-time.After(500 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.run(t, fleetRun{name: "rolling reload", b: n, steps: 3, step: reload})
	f.run(t, fleetRun{name: "rolling restart", b: n, steps: 3, step: nginxRestart})
}
