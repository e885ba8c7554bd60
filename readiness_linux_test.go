//go:build linux

package baton_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/systemd/notifytest"
)

// readyChild serves "/" and "/readyz" (both naming its pid in
// X-Webapp-Pid) on the passed socket "http", swaps in a new generation on
// SIGHUP, and stops on SIGTERM after a ShutdownDelay of 1 s.
func readyChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var r baton.Readiness
	pid := strconv.Itoa(os.Getpid())
	mux := readyMux(&r)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("X-Webapp-Pid", pid)
		mux.ServeHTTP(w, req)
	})
	err := baton.Run(ctx, baton.Options{Reload: hup, Readiness: &r, ShutdownDelay: time.Second, DrainTimeout: 5 * time.Second},
		baton.HTTP(baton.Socket{Name: "http"}, &http.Server{Handler: h}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ready child:", err)
		return 1
	}
	return 0
}

// TestRunReadinessAcrossHandOver: a reload does not make the service
// unready. /readyz, asked on a new connection again and again across a
// SIGHUP swap, answers 200 from the old generation and then the new one,
// never 503; a SIGTERM to the new one then turns it 503 before it exits.
func TestRunReadinessAcrossHandOver(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	subreaper(t)
	notify := notifytest.Listen(t)
	addr, f := tcpSocket(t)
	svc := startService(t, "ready", []string{"http"}, []*os.File{f}, nil, nil, "NOTIFY_SOCKET="+notify.Addr())
	first := svc.pid
	notify.WaitFor(t, 0, "READY=1", 15*time.Second)

	url := "http://" + addr + "/readyz"
	pids := map[string]int{}
	var bad []string
	ask := func() {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			bad = append(bad, err.Error())
			return
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			bad = append(bad, fmt.Sprintf("%d from pid %s", resp.StatusCode, resp.Header.Get("X-Webapp-Pid")))
		}
		pids[resp.Header.Get("X-Webapp-Pid")]++
	}
	ask()
	// Asking from before the SIGHUP until the old generation has drained
	// and exited.
	asked := make(chan struct{})
	go func() {
		defer close(asked)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			ask()
			select {
			case <-svc.done:
				return
			default:
			}
		}
	}()
	from := len(notify.Messages())
	if err := syscall.Kill(first, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	newPID, _, err := mainPID(ctx, notify, from)
	if err != nil {
		t.Fatalf("no MAINPID= after SIGHUP: %v", err)
	}
	<-asked
	ask()
	if code := svc.exit(t, time.Second); code != 0 {
		t.Errorf("the old generation exited with %d, want 0", code)
	}
	gen := adopt(t, newPID)
	t.Logf("GET /readyz across the hand-over: %v (pid: answers)", pids)
	if len(bad) > 0 {
		t.Errorf("%d answers of /readyz across the hand-over were not 200 (%q): a reload must leave the service ready", len(bad), bad)
	}
	if pids[strconv.Itoa(first)] == 0 || pids[strconv.Itoa(newPID)] == 0 {
		t.Errorf("/readyz answered by %v, want both the old pid %d and the new %d", pids, first, newPID)
	}

	from = len(notify.Messages())
	if err := syscall.Kill(newPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.WaitFor(t, from, "STATUS=stopping: not ready, still serving for 1s before the drain", 10*time.Second)
	if code, body, err := fetch(url); err != nil || code != 503 {
		t.Errorf("GET /readyz after SIGTERM = %d %q, %v; want 503 within the delay", code, body, err)
	}
	if code := gen.exit(t, 15*time.Second); code != 0 {
		t.Errorf("the new generation exited with %d on SIGTERM, want 0", code)
	}
}
