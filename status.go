package baton

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/baton-dev/baton/upgrade"
)

// Status is what a running generation says of itself on its control
// socket (QueryStatus; `webapp status`).
type Status struct {
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	Version    string    `json:"version,omitempty"`
	Started    time.Time `json:"started"`
	// State is "serving", "stopping" (draining before exit) or
	// "handed-over" (draining after a new generation took over).
	State   string         `json:"state"`
	Sockets []SocketStatus `json:"sockets"`
	// Reloads and FailedReloads count the service's reloads over all its
	// generations.
	Reloads       int           `json:"reloads"`
	FailedReloads int           `json:"failed_reloads"`
	LastReload    *ReloadStatus `json:"last_reload,omitempty"`
}

// SocketStatus is one served socket: its connections open, and those of
// them with work under way (see drain.Drainer.InFlight).
type SocketStatus struct {
	Name        string   `json:"name"`
	Addresses   []string `json:"addresses"`
	Connections int      `json:"connections"`
	InFlight    int      `json:"in_flight"`
}

// ReloadStatus is the outcome of this generation's latest reload.
type ReloadStatus struct {
	OK       bool          `json:"ok"`
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration_ns"`
	NewPID   int           `json:"new_pid,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// QueryStatus asks the generation serving on the control socket at path
// (Options.Control) for its Status.
func QueryStatus(ctx context.Context, path string) (Status, error) {
	line, err := upgrade.RequestStatus(ctx, path)
	if err != nil {
		return Status{}, err
	}
	var st Status
	if err := json.Unmarshal([]byte(line), &st); err != nil {
		return Status{}, fmt.Errorf("baton: status from %s: %w", path, err)
	}
	return st, nil
}

// inFlighter is a kind that can say how many connections have work under
// way.
type inFlighter interface{ inFlight() int }

// statusOf is the group's Status now; state is what Run is doing.
func (g *group) statusOf(started time.Time, state *atomic.Value) Status {
	l := g.lin
	l.mu.Lock()
	st := Status{
		PID: os.Getpid(), Generation: l.generation, Version: g.opts.Version, Started: started,
		Reloads: l.reloads, FailedReloads: l.failedReloads,
	}
	if e := l.lastReload; e != nil {
		r := &ReloadStatus{OK: e.Kind == EventReloadCommitted, At: e.Time, Duration: e.Duration, NewPID: e.NewPID}
		if e.Err != nil {
			r.Error = e.Err.Error()
		}
		st.LastReload = r
	}
	l.mu.Unlock()
	st.State, _ = state.Load().(string)
	for _, s := range g.servers {
		ss := SocketStatus{Name: s.sock.Name, Connections: s.kind.connections()}
		if f, ok := s.kind.(inFlighter); ok {
			ss.InFlight = f.inFlight()
		}
		for _, ln := range g.set.Listeners(s.sock.Name) {
			ss.Addresses = append(ss.Addresses, ln.Addr().String())
		}
		for _, pc := range g.set.PacketConns(s.sock.Name) {
			ss.Addresses = append(ss.Addresses, pc.LocalAddr().String())
		}
		st.Sockets = append(st.Sockets, ss)
	}
	return st
}
