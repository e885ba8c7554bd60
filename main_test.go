package baton_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/upgrade"
)

// The test binary doubles as the service under test: with childEnv set,
// TestMain runs that child instead of the tests. The variable does not
// begin with BATON_, so that it reaches a new generation started by a
// reload (package upgrade keeps BATON_* from it), which then runs the same
// child.
const (
	childEnv        = "RUN_TEST_CHILD"   // example, passed, udp or ready
	childServersEnv = "RUN_TEST_SERVERS" // passed: the servers, as JSON
	childHoldEnv    = "RUN_TEST_HOLD_AT" // udp: the step to hold at
	childReleaseEnv = "RUN_TEST_RELEASE" // udp: the FIFO whose line ends the hold
	childFailEnv    = "RUN_TEST_FAIL_AT" // udp: the new-side step to exit at
	childControlEnv = "RUN_TEST_CONTROL" // main: the control socket
	childEventsEnv  = "RUN_TEST_EVENTS"  // main: the file events are appended to, as JSON lines
	childFailEnv2   = "RUN_TEST_FAIL"    // main: a file; a new generation that removes it exits 3
)

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "example":
		// Exactly the Example's code; it exits 1 through log.Fatal.
		ExampleRun_twoSockets()
		os.Exit(0)
	case "passed":
		os.Exit(passedChild())
	case "udp":
		os.Exit(udpChild())
	case "main":
		mainChild() // exits
	case "ready":
		os.Exit(readyChild())
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: no such child\n", childEnv, os.Getenv(childEnv))
		os.Exit(2)
	}
}

// mainChild is a service whose main is one baton.Main call, as in the
// README's quick start: serve, reload and version by its command line.
func mainChild() {
	if f := os.Getenv(childFailEnv2); f != "" && os.Getenv("BATON_GENERATION") != "" && os.Remove(f) == nil {
		fmt.Fprintln(os.Stderr, "main child: failing as asked")
		os.Exit(3)
	}
	var onEvent func(baton.Event)
	if path := os.Getenv(childEventsEnv); path != "" {
		onEvent = func(e baton.Event) {
			line := eventLine{Kind: string(e.Kind), PID: e.PID, Generation: e.Generation, Reloads: e.Reloads, FailedReloads: e.FailedReloads,
				NewPID: e.NewPID, Connections: e.Connections, Cut: e.Cut, Stopping: e.Stopping, Message: e.Message}
			if e.Err != nil {
				line.Err = e.Err.Error()
			}
			b, _ := json.Marshal(line)
			// One write per line, O_APPEND: generations write to it at once.
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err == nil {
				f.Write(append(b, '\n'))
				f.Close()
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d\n", os.Getpid())
	})
	baton.Main(baton.Options{Control: os.Getenv(childControlEnv), Version: "1.2.3", OnEvent: onEvent},
		baton.HTTP(baton.Socket{Name: "http", Address: "127.0.0.1:0"}, &http.Server{Handler: mux}))
}

// eventLine is a baton.Event as the main child writes it.
type eventLine struct {
	Kind                           string
	PID, Generation                int
	Reloads, FailedReloads, NewPID int
	Connections, Cut               int
	Stopping                       bool
	Err, Message                   string
}

// childServer describes one server of the passed child.
type childServer struct {
	Kind     string // "http", "stream" or "datagram"
	Name     string
	Network  string
	Address  string
	Optional bool
}

func (s childServer) socket() baton.Socket {
	return baton.Socket{Name: s.Name, Network: s.Network, Address: s.Address, Optional: s.Optional}
}

// childResult is what the passed child reports, as one JSON line on
// stdout.
type childResult struct {
	Err string
	// Taken lists the fallback addresses found bound after Run returned.
	Taken []string
}

// passedChild runs the servers of childServersEnv on the sockets passed by
// LISTEN_FDS, and reports what Run returned and whether it left a fallback
// address bound.
func passedChild() int {
	var servers []childServer
	if err := json.Unmarshal([]byte(os.Getenv(childServersEnv)), &servers); err != nil {
		fmt.Fprintln(os.Stderr, "passed child:", err)
		return 2
	}
	var ss []*baton.Server
	for _, s := range servers {
		switch s.Kind {
		case "http":
			ss = append(ss, baton.HTTP(s.socket(), &http.Server{Handler: http.HandlerFunc(hello)}))
		case "stream":
			ss = append(ss, baton.Stream(s.socket(), func(context.Context, net.Conn) {}))
		case "datagram":
			ss = append(ss, baton.Datagram(s.socket(), func(net.PacketConn, []byte, net.Addr) {}))
		default:
			fmt.Fprintf(os.Stderr, "passed child: kind %q\n", s.Kind)
			return 2
		}
	}
	// Bounded even if Run wrongly starts.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var r childResult
	if err := baton.Run(ctx, baton.Options{}, ss...); err != nil {
		r.Err = err.Error()
	}
	for _, s := range servers {
		if s.Address != "" && !bindable(s.socket()) {
			r.Taken = append(r.Taken, s.Address)
		}
	}
	b, _ := json.Marshal(r)
	fmt.Printf("%s\n", b)
	return 0
}

// bindable reports whether the socket's fallback address is free.
func bindable(s baton.Socket) bool {
	if s.Datagram() {
		pc, err := net.ListenPacket(s.Network, s.Address)
		if err != nil {
			return false
		}
		pc.Close()
		return true
	}
	ln, err := net.Listen("tcp", s.Address)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// udpChild is a datagram service that answers "<pid> <datagram>" on the
// passed socket "udp" and swaps in a new generation on SIGHUP. With
// childHoldEnv, the generation that passes that step of a hand-over says
// "at <step>" on stdout (which later generations share) and waits there
// for a line from the FIFO childReleaseEnv; with childFailEnv, it exits
// with status 3 at that step.
func udpChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	pid := os.Getpid()
	answer := func(pc net.PacketConn, b []byte, from net.Addr) {
		pc.WriteTo(fmt.Appendf(nil, "%d %s", pid, b), from)
	}
	hold, fail := upgrade.Step(os.Getenv(childHoldEnv)), upgrade.Step(os.Getenv(childFailEnv))
	err := baton.Run(ctx, baton.Options{
		Reload:       hup,
		DrainTimeout: 5 * time.Second,
		OnHandoverStep: func(s upgrade.Step) {
			switch s {
			case hold:
				fmt.Printf("at %s\n", s)
				if f, err := os.Open(os.Getenv(childReleaseEnv)); err == nil {
					bufio.NewReader(f).ReadString('\n')
					f.Close()
				}
			case fail:
				os.Exit(3)
			}
		},
	}, baton.Datagram(baton.Socket{Name: "udp", Network: "udp"}, answer))
	if err != nil {
		fmt.Fprintln(os.Stderr, "udp child:", err)
		return 1
	}
	return 0
}
