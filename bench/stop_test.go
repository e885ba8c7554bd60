package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runStop is scenario 4: SIGTERM to exit, idle and with a request in
// flight, webapp and plain net/http.
func runStop(t *testing.T, e *benchEnv) *Stop {
	cfg := e.cfg
	s := &Stop{Rounds: cfg.stopRounds}
	servers := []struct {
		name, path, ready string
		args              func(string) []string
	}{
		{"webapp", e.bins.webapp, webappReady, webappArgs},
		{"plain net/http", e.bins.plain, plainReady, plainArgs},
	}
	for _, srv := range servers {
		idle := StopCase{Server: srv.name, Situation: "idle keep-alive connections only", Short: "idle", IdleConns: cfg.idleConns}
		busy := StopCase{Server: srv.name, Situation: fmt.Sprintf("one %s request in flight", fmtDur(cfg.slow)), Short: fmtDur(cfg.slow) + " in flight", Request: cfg.slow, RanBefore: cfg.ranBefore}
		for round := range cfg.stopRounds {
			p, url := startServer(t, e, "stop-"+strings.Fields(srv.name)[0], srv.path, srv.args, srv.ready)
			addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
			conns := make([]net.Conn, cfg.idleConns)
			for i := range conns {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := get(c, "/", false); err != nil {
					t.Fatalf("%s: idle connection %d: %v", srv.name, i, err)
				}
				conns[i] = c
			}
			d, err := p.Stop(syscall.SIGTERM, 30*time.Second)
			if err != nil {
				t.Errorf("%s, idle, round %d: %v", srv.name, round+1, err)
			}
			idle.Exit = append(idle.Exit, d)
			for _, c := range conns {
				c.Close()
			}

			p, url = startServer(t, e, "stop-"+strings.Fields(srv.name)[0], srv.path, srv.args, srv.ready)
			addr = strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			type outcome struct {
				resp *http.Response
				err  error
				at   time.Time
			}
			done := make(chan outcome, 1)
			sent := time.Now()
			go func() {
				resp, err := get(c, fmt.Sprintf("/slow?ms=%d", cfg.slow.Milliseconds()), false)
				done <- outcome{resp, err, time.Now()}
			}()
			time.Sleep(cfg.ranBefore - time.Since(sent))
			sig := time.Now()
			d, err = p.Stop(syscall.SIGTERM, 30*time.Second)
			if err != nil {
				t.Errorf("%s, in flight, round %d: %v", srv.name, round+1, err)
			}
			busy.Exit = append(busy.Exit, d)
			o := <-done
			c.Close()
			busy.Completed = append(busy.Completed, o.err == nil && o.resp.StatusCode == http.StatusOK)
			busy.ConnClose = append(busy.ConnClose, o.err == nil && o.resp.Close)
			if o.err == nil {
				busy.AfterResponse = append(busy.AfterResponse, sig.Add(d).Sub(o.at))
			}
			if o.err != nil {
				t.Logf("%s, in flight, round %d: the request failed: %v", srv.name, round+1, o.err)
			}
			t.Logf("%s round %d: idle %v, in flight %v", srv.name, round+1, idle.Exit[round], d)
		}
		s.Cases = append(s.Cases, idle, busy)
	}
	return s
}

// get sends GET path on c and reads the whole response; with close it asks
// the server to close the connection.
func get(c net.Conn, path string, close bool) (*http.Response, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: bench\r\n"
	if close {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return nil, err
	}
	return resp, nil
}
