package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd/systemdtest"
)

// The four protocols of webapp (HTTP/1.1 and h2c on http, TLS with HTTP/2
// on https, gRPC on grpc, datagrams on udp) through reloads and restarts
// under the real systemd, each driven by a client that is not baton's:
// h2load (Debian's nghttp2-client), grpc-go, and a plain UDP socket.

// TestProtocolsThroughReloadsAndRestarts: with the four socket units,
// 20 `systemctl reload webapp` and 10 `systemctl restart webapp`, one
// after another, under concurrent load on every socket: h2load over h2c
// and over TLS (short runs one after another: h2load gives up a
// connection's remaining requests at a GOAWAY, so a run must end on the
// connections it opened), a grpc-go loop of unary health checks, four
// grpc-go Ticks streams called again and again, and a UDP sender. No
// h2load request fails or errs, no health check fails, every stream
// either completes or ends with UNAVAILABLE "draining, retry" and its
// retry is served by a newer generation, every datagram is answered
// exactly once by one of the generations, every reload and restart exits
// 0 and MainPID changes each time.
func TestProtocolsThroughReloadsAndRestarts(t *testing.T) {
	const cycles = 30 // every third a restart: 20 reloads, 10 restarts
	// The Ticks streams: ticks per call, 100 ms each; the longer ones are
	// nearly always ended by the next drain.
	counts := []uint32{5, 10, 20, 40}
	streams := len(counts)
	h2load := needTool(t, "h2load")
	s := startAllSockets(t, serviceOptions{}, newTestCert(t, "A"))
	firstPID := s.mainPID(t)
	began := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopLoads := func() { stopOnce.Do(func() { close(stop) }) }
	defer stopLoads()

	var (
		wg          sync.WaitGroup
		h2c, h2tls  h2loadTotals
		health      healthTotals
		udp         udpTotals
		ticks       = make([][]tickAttempt, streams)
		healthConn  = grpcClient(t, s.grpcAddr())
		streamsConn = grpcClient(t, s.grpcAddr())
	)
	wg.Go(func() { h2c = h2loadLoop(ctx, h2load, s.url+"/", stop) })
	wg.Go(func() { h2tls = h2loadLoop(ctx, h2load, s.httpsURL()+"/", stop) })
	wg.Go(func() { health = healthLoop(ctx, healthConn, stop) })
	for i := range streams {
		wg.Go(func() { ticks[i] = ticksLoop(ctx, streamsConn, counts[i], stop) })
	}
	wg.Go(func() { udp = udpLoop(ctx, s.udpAddr(), stop) })

	// The loads get going on the first generation; then each generation
	// serves them a second before the next reload or restart (restarts
	// more than 3 s apart: systemd's start limit is 5 starts in 10 s).
	time.Sleep(2 * time.Second)
	var done []cycle
	for i := range cycles {
		verb := "reload"
		if i%3 == 2 {
			verb = "restart"
		}
		c := s.runCycle(ctx, verb)
		done = append(done, c)
		if c.Err != nil || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	time.Sleep(time.Second)
	stopLoads()
	wg.Wait()
	took := time.Since(began)

	// Every generation, in order: the first, then each cycle's new MainPID.
	gens := []string{firstPID}
	var reloadTook, restartTook []time.Duration
	reloads, restarts := 0, 0
	for i, c := range done {
		switch {
		case c.Err != nil:
			t.Errorf("%s %d: systemctl %s webapp.service: %v\n%s", c.Verb, i, c.Verb, c.Err, c.Output)
		case c.After == c.Before || c.After == "" || c.After == "0":
			t.Errorf("%s %d: MainPID %s before, %s after, want a new one", c.Verb, i, c.Before, c.After)
		}
		if c.Verb == "reload" {
			reloads++
			reloadTook = append(reloadTook, c.Took)
		} else {
			restarts++
			restartTook = append(restartTook, c.Took)
		}
		gens = append(gens, c.After)
	}
	if len(done) != cycles {
		t.Fatalf("%d of %d reloads and restarts ran", len(done), cycles)
	}
	gen := map[int64]int{}
	for i, p := range gens {
		pid, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			t.Fatalf("MainPID %q: %v", p, err)
		}
		if _, ok := gen[pid]; ok {
			t.Fatalf("MainPID %d twice among the generations %v", pid, gens)
		}
		gen[pid] = i
	}

	for _, h := range []struct {
		what  string
		tot   h2loadTotals
		proto string
	}{{"h2load h2c on http", h2c, "h2c"}, {"h2load TLS on https", h2tls, "h2"}} {
		tot := h.tot
		if tot.Runs == 0 || tot.Requests == 0 || tot.Failed != 0 || tot.Errored != 0 || tot.Timeout != 0 ||
			tot.Incomplete != 0 || tot.Not2xx != 0 || tot.Succeeded != tot.Requests {
			t.Errorf("%s: %v; want every request a 2xx, 0 failed, 0 errored; failing runs:\n%s", h.what, tot, strings.Join(tot.Bad, "\n---\n"))
		}
		if tot.Protocols[h.proto] != tot.Runs {
			t.Errorf("%s: application protocols %v, want %s in each of %d runs", h.what, tot.Protocols, h.proto, tot.Runs)
		}
	}

	if health.Failed != 0 || health.Serving == 0 {
		t.Errorf("gRPC health checks: %v, want 0 failed:\n%s", health, strings.Join(health.Errors, "\n"))
	}

	var attempts, complete, drained, emptyDrained, retriesChecked int
	for i, atts := range ticks {
		var last int64 // the pid of the stream's last ticks
		retryDue := false
		for j, a := range atts {
			attempts++
			switch {
			case a.Bad != "":
				t.Errorf("Ticks stream %d, call %d: %v; want %d ticks, or UNAVAILABLE %q", i, j, a, counts[i], "draining, retry")
			case a.Complete:
				complete++
			case a.Drained && a.Ticks == 0:
				emptyDrained++
			case a.Drained:
				drained++
			}
			if a.Ticks > 0 {
				g, ok := gen[a.PID]
				switch {
				case !ok:
					t.Errorf("Ticks stream %d, call %d: ticks from pid %d, not a generation %v", i, j, a.PID, gens)
				case retryDue && g <= gen[last]:
					t.Errorf("Ticks stream %d, call %d: the retry after UNAVAILABLE was served by pid %d (generation %d), want one newer than pid %d (generation %d)",
						i, j, a.PID, g, last, gen[last])
				}
				if retryDue {
					retriesChecked++
				}
				last, retryDue = a.PID, false
			}
			if a.Drained {
				retryDue = true
			}
		}
		if retryDue {
			t.Errorf("Ticks stream %d: its last call ended with UNAVAILABLE and no retry brought ticks: %v", i, atts[len(atts)-1])
		}
	}
	if drained == 0 {
		t.Errorf("no Ticks stream was ended by a drain in %d reloads and restarts (%d calls): the retry was not exercised", cycles, attempts)
	}

	if udp.Sent == 0 || udp.Answered != udp.Sent || udp.Unanswered != 0 || udp.Duplicates != 0 || udp.Strange != 0 || udp.WriteErrors != 0 || udp.ReadErrors != 0 {
		var miss []string
		for _, m := range udp.Missing {
			miss = append(miss, fmt.Sprintf("u%d sent %s", m.ID, nearest(done, m.Sent)))
		}
		t.Errorf("UDP: %v; want every datagram answered exactly once; unanswered:\n%s\n%s", udp, strings.Join(miss, "\n"), strings.Join(udp.Errors, "\n"))
	}
	for p := range udp.ByPID {
		if !slices.Contains(gens, p) {
			t.Errorf("UDP: answers from pid %q, not a generation %v", p, gens)
		}
	}
	if len(udp.ByPID) < 2 {
		t.Errorf("UDP: answers only from %v over %d generations", udp.ByPID, len(gens))
	}

	p := s.show(t, "ActiveState", "SubState", "NRestarts")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["NRestarts"] != "0" {
		t.Errorf("webapp.service at the end: %v, want active/running with NRestarts=0", p)
	}
	j := s.journal(t)
	if strings.Contains(j, "cut at the deadline") {
		t.Errorf("a generation cut connections at its drain deadline:\n%s", lastLine(j, "cut at the deadline"))
	}

	r50, rMax := p50Max(reloadTook)
	s50, sMax := p50Max(restartTook)
	t.Logf("%d reloads (systemctl reload p50 %v, max %v) and %d restarts (p50 %v, max %v), %d generations, all in %v",
		reloads, r50.Round(time.Millisecond), rMax.Round(time.Millisecond), restarts, s50.Round(time.Millisecond), sMax.Round(time.Millisecond),
		len(gens), took.Round(time.Second))
	t.Logf("h2load h2c on http: %v", h2c)
	t.Logf("h2load TLS on https: %v", h2tls)
	t.Logf("gRPC Health/Check: %v", health)
	t.Logf("gRPC Ticks: %d streams (%v ticks per call), %d calls: %d complete, %d ended by a drain with UNAVAILABLE after some ticks, "+
		"%d retries that met a draining generation (UNAVAILABLE at once), %d retries checked to be served by a newer generation",
		streams, counts, attempts, complete, drained, emptyDrained, retriesChecked)
	t.Logf("UDP: %v", udp)
}

// TestCertificateRotation: webapp serves https with certificate A. A
// reload with a broken pair in /etc/webapp (certificate B, key A) fails
// visibly: systemctl reload exits non-zero, the journal says why, and the
// old generation goes on serving A. Then, with an HTTP/1.1 keep-alive
// connection and an HTTP/2 one each with a request in flight, the pair is
// replaced with B and webapp reloaded: new TLS connections get B, the
// requests in flight finish on their connections with A, the clients'
// next requests all succeed and move to B, and an h2load TLS loop
// throughout has 0 failed requests.
func TestCertificateRotation(t *testing.T) {
	const slowMS = 3000
	h2load := needTool(t, "h2load")
	a, b := newTestCert(t, "A"), newTestCert(t, "B")
	s := startAllSockets(t, serviceOptions{}, a)
	cfg := tlsConfig(a, b)
	addr := fmt.Sprintf("127.0.0.1:%d", s.httpsPort)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	newConnGets := func(when string, want *testCert) {
		t.Helper()
		leaf, err := freshLeaf(ctx, addr, cfg)
		if err != nil || fingerprint(leaf) != fingerprint(want.leaf) {
			t.Errorf("%s: a new TLS connection got certificate %s (%v), want %s", when, certName(leaf, a, b), err, want.name)
		}
	}
	newConnGets("at start", a)
	pidA := s.mainPID(t)

	stop := make(chan struct{})
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop) }) }
	defer stopLoad()
	loaded := make(chan h2loadTotals, 1)
	go func() { loaded <- h2loadLoop(ctx, h2load, s.httpsURL()+"/", stop) }()

	// A broken pair: certificate B with key A.
	s.installCert(t, b.certPEM, a.keyPEM)
	cursor, err := s.journalCursor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	broken := s.reload(ctx)
	why := "reload refused: TLS key " + keyPath + " with certificate " + certPath + ": private key does not match public key"
	j, err := s.waitLinesAfter(ctx, cursor, 10*time.Second, why, "Reload failed for")
	if err != nil {
		t.Fatal(err)
	}
	if broken.Err == nil {
		t.Errorf("systemctl reload with certificate B and key A succeeded, want a failure:\n%s", broken.Output)
	}
	if m := missing(j, why, "Reload failed for"); m != "" {
		t.Errorf("the journal of the failed reload lacks %q:\n%s", m, j)
	}
	if pid := s.mainPID(t); pid != pidA {
		t.Errorf("after the failed reload MainPID is %s, want %s still", pid, pidA)
	}
	newConnGets("after the failed reload", a)

	// Two clients, each with its connection open and a request in flight.
	clients := []struct {
		name  string
		h2    bool
		proto string
	}{{"HTTP/1.1 keep-alive", false, "HTTP/1.1"}, {"HTTP/2", true, "HTTP/2.0"}}
	type inFlight struct {
		c    *http.Client
		slow chan tlsAnswer
	}
	var flights []inFlight
	for _, cl := range clients {
		c := tlsClient(cfg, cl.h2)
		first := tlsGet(ctx, c, s.httpsURL()+"/", nil)
		if first.Err != nil || first.Status != 200 || first.Proto != cl.proto || fingerprint(first.Leaf) != fingerprint(a.leaf) {
			t.Fatalf("%s: GET / = %d %s %v with certificate %s, want 200 over %s with A", cl.name, first.Status, first.Proto, first.Err, certName(first.Leaf, a, b), cl.proto)
		}
		f := inFlight{c: c, slow: make(chan tlsAnswer, 1)}
		wrote := make(chan struct{})
		go func() {
			f.slow <- tlsGet(ctx, c, fmt.Sprintf("%s/slow?ms=%d", s.httpsURL(), slowMS), func() { close(wrote) })
		}()
		select {
		case <-wrote:
		case a := <-f.slow:
			t.Fatalf("%s: GET /slow ended before it was written: %v", cl.name, a.Err)
		}
		flights = append(flights, f)
	}

	// The rotation.
	s.installCert(t, b.certPEM, b.keyPEM)
	rotation := s.reload(ctx)
	if rotation.Err != nil {
		t.Fatalf("systemctl reload with certificate B: %v\n%s\n%s", rotation.Err, rotation.Output, s.journal(t))
	}
	pidB := s.mainPID(t)
	if pidB == pidA {
		t.Errorf("after the rotation MainPID is %s still", pidA)
	}
	if err := s.waitListenerClosed(ctx, 15*time.Second, s.httpsPort, pidA); err != nil {
		t.Fatal(err)
	}
	newConnGets("after the rotation", b)
	var moved []string
	for i, f := range flights {
		cl := clients[i]
		r := <-f.slow
		want := fmt.Sprintf("slept %d ms\n", slowMS)
		if r.Err != nil || r.Status != 200 || r.Body != want || !r.Reused || fingerprint(r.Leaf) != fingerprint(a.leaf) {
			t.Errorf("%s: GET /slow in flight at the rotation = %d %q %v (reused connection %v, certificate %s), want 200 %q on the connection it had, with A",
				cl.name, r.Status, r.Body, r.Err, r.Reused, certName(r.Leaf, a, b), want)
		}
		// The client's next requests: all answered, first on the old
		// connection while the old generation still serves it, then on a
		// new one, with B.
		seen := map[string]int{}
		for n := 0; ; n++ {
			r := tlsGet(ctx, f.c, s.httpsURL()+"/", nil)
			if r.Err != nil || r.Status != 200 || r.Proto != cl.proto {
				t.Errorf("%s: request %d after the rotation = %d %s %v, want 200 over %s", cl.name, n, r.Status, r.Proto, r.Err, cl.proto)
			}
			seen[certName(r.Leaf, a, b)]++
			if fingerprint(r.Leaf) == fingerprint(b.leaf) {
				break
			}
			if n == 600 || ctx.Err() != nil {
				t.Errorf("%s: after %d requests still no connection with B: %v", cl.name, n+1, seen)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		moved = append(moved, fmt.Sprintf("%s: in-flight request on the old connection with A, then %v", cl.name, seen))
	}

	stopLoad()
	tot := <-loaded
	if tot.Runs == 0 || tot.Failed != 0 || tot.Errored != 0 || tot.Timeout != 0 || tot.Incomplete != 0 || tot.Not2xx != 0 || tot.Succeeded != tot.Requests {
		t.Errorf("h2load TLS on https during the failed reload and the rotation: %v; want 0 failed:\n%s", tot, strings.Join(tot.Bad, "\n---\n"))
	}
	t.Logf("broken pair: systemctl reload %s after %v, MainPID %s kept, journal: %q", exitStatus(broken.Err), broken.Took.Round(time.Millisecond), pidA, lastLine(j, "reload refused"))
	t.Logf("rotation: systemctl reload exit 0 after %v, MainPID %s -> %s; A serial %s, B serial %s", rotation.Took.Round(time.Millisecond), pidA, pidB, a.leaf.SerialNumber, b.leaf.SerialNumber)
	for _, m := range moved {
		t.Logf("%s", m)
	}
	t.Logf("h2load TLS on https throughout: %v", tot)
}

// TestProtocolsContrast shows that the counting of the tests above finds
// failures where there are some. One long h2load run across a reload:
// baton serves a busy HTTP/2 connection only up to half the drain
// deadline, then sends GOAWAY, and h2load, which never reconnects, counts
// every request it had yet to send as failed; this is why the tests run
// h2load in short runs. And the h2load loop, the health checks and the
// UDP sender of the first test against webapp run the way a service runs
// without socket activation, binding its own sockets (--listen flags),
// through `systemctl restart`: its sockets close, connections are
// refused, datagrams sent meanwhile are lost, and the loads count it.
func TestProtocolsContrast(t *testing.T) {
	h2load := needTool(t, "h2load")
	cert := newTestCert(t, "A")

	t.Run("one h2load run across a reload", func(t *testing.T) {
		const drainTimeout = 4 * time.Second
		s := startAllSockets(t, serviceOptions{ServiceDropIn: "Environment=WEBAPP_OPTS=--drain-timeout=" + drainTimeout.String()}, cert)
		pid := s.mainPID(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		done := make(chan h2loadRun, 1)
		go func() { done <- runH2load(ctx, h2load, "-c", "4", "-m", "1", "-n", "2000000", s.url+"/") }()
		waitFor(t, 30*time.Second, "h2load's 4 connections held by webapp", func() (bool, string) {
			n, saw := s.connsHeldBy(ctx, s.port, pid)
			return n >= 4, saw
		})
		rel := s.reload(ctx)
		if rel.Err != nil {
			t.Fatalf("systemctl reload: %v\n%s", rel.Err, rel.Output)
		}
		reloaded := time.Now()
		r := <-done
		ended := time.Since(reloaded)
		if r.Err != nil {
			t.Fatalf("%v\n%s", r.Err, r.Output)
		}
		if r.Failed == 0 || r.Done >= r.Total {
			t.Errorf("one h2load run across a reload: %d of %d requests done, %d failed; want the run cut short by the GOAWAY at half the %v drain deadline\n%s",
				r.Done, r.Total, r.Failed, drainTimeout, r.Output)
		}
		t.Logf("one h2load run (-c 4 -m 1 -n %d) across a reload with --drain-timeout=%v: %d succeeded, %d failed, %d errored (h2load gave up %v after the reload returned)",
			r.Total, drainTimeout, r.Succeeded, r.Failed, r.Errored, ended.Round(100*time.Millisecond))
	})

	t.Run("a service that binds its own sockets, restarted", func(t *testing.T) {
		const restarts = 3
		box := systemdtest.Boot(t, systemdtest.Options{})
		httpPort, httpsPort, grpcPort, udp4Port := systemdtest.Port(t), systemdtest.Port(t), systemdtest.Port(t), udpPort(t)
		box.CopyFile(t, buildWebapp(t, ""), "/usr/bin/webapp", 0o755)
		box.WriteFile(t, keyPath, cert.keyPEM, 0o600)
		box.WriteFile(t, certPath, cert.certPEM, 0o644)
		box.WriteFile(t, "/etc/systemd/system/webapp-plain.service", []byte(fmt.Sprintf(`[Unit]
Description=webapp binding its own sockets
[Service]
Type=notify
NotifyAccess=all
ExecStart=/usr/bin/webapp serve --listen 127.0.0.1:%d --listen-https 127.0.0.1:%d --listen-grpc 127.0.0.1:%d --listen-udp 127.0.0.1:%d
`, httpPort, httpsPort, grpcPort, udp4Port)), 0o644)
		box.Systemctl(t, "daemon-reload")
		box.Systemctl(t, "start", "webapp-plain.service")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		stop := make(chan struct{})
		var stopOnce sync.Once
		stopLoads := func() { stopOnce.Do(func() { close(stop) }) }
		defer stopLoads()
		var (
			wg     sync.WaitGroup
			h2c    h2loadTotals
			health healthTotals
			udp    udpTotals
			cc     = grpcClient(t, fmt.Sprintf("127.0.0.1:%d", grpcPort))
		)
		wg.Go(func() { h2c = h2loadLoop(ctx, h2load, fmt.Sprintf("http://127.0.0.1:%d/", httpPort), stop) })
		wg.Go(func() { health = healthLoop(ctx, cc, stop) })
		wg.Go(func() { udp = udpLoop(ctx, fmt.Sprintf("127.0.0.1:%d", udp4Port), stop) })
		time.Sleep(2 * time.Second)
		for i := range restarts {
			if _, stderr, err := box.Exec(ctx, "systemctl", "restart", "webapp-plain.service"); err != nil {
				t.Errorf("restart %d: %v: %s", i, err, stderr)
			}
			time.Sleep(2 * time.Second)
		}
		stopLoads()
		wg.Wait()
		// The health checks and the datagrams meet the gap between the old
		// process closing its sockets and the new one binding them, every
		// time; h2load, pausing between runs, may miss it.
		if health.Failed == 0 || udp.Unanswered == 0 {
			t.Errorf("%d restarts of a webapp binding its own sockets: %d health checks failed, %d datagrams unanswered; want some of each", restarts, health.Failed, udp.Unanswered)
		}
		t.Logf("%d restarts of a webapp binding its own sockets: h2load h2c: %v (%d requests not done)", restarts, h2c, h2c.Failed+h2c.Timeout)
		t.Logf("gRPC Health/Check: %v (first errors: %q)", health, health.Errors[:min(3, len(health.Errors))])
		t.Logf("UDP: %v", udp)
	})
}
