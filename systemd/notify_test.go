package systemd_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd"
	"github.com/baton-dev/baton/systemd/notifytest"
)

func TestNotifyStates(t *testing.T) {
	sock := notifytest.Listen(t)
	n, err := systemd.NewNotifier(sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		state []systemd.State
		want  []string
	}{
		{"ready", []systemd.State{systemd.Ready}, []string{"READY=1"}},
		{"stopping", []systemd.State{systemd.Stopping}, []string{"STOPPING=1"}},
		{"status", []systemd.State{systemd.Status("serving\nhttp")}, []string{"STATUS=serving http"}},
		{"mainpid+ready", []systemd.State{systemd.MainPID(42), systemd.Ready}, []string{"MAINPID=42", "READY=1"}},
		{"extend", []systemd.State{systemd.ExtendTimeout(1500 * time.Millisecond)}, []string{"EXTEND_TIMEOUT_USEC=1500000"}},
		{"watchdog", []systemd.State{systemd.WatchdogPing}, []string{"WATCHDOG=1"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := n.Notify(tt.state...); err != nil {
				t.Fatalf("Notify(%q) = %v", tt.state, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m, _, err := sock.Wait(ctx, i, func(notifytest.Message) bool { return true })
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(m.Fields, "|") != strings.Join(tt.want, "|") {
				t.Errorf("Notify(%q) sent %q, want %q", tt.state, m.Fields, tt.want)
			}
		})
	}
}

func TestReloadingHasMonotonicTimestamp(t *testing.T) {
	sock := notifytest.Listen(t)
	n, err := systemd.NewNotifier(sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(systemd.Reloading()); err != nil {
		t.Fatal(err)
	}
	m, _ := sock.WaitFor(t, 0, "RELOADING=1", 5*time.Second)
	v, ok := m.Get("MONOTONIC_USEC")
	if !ok {
		t.Fatalf("Reloading() sent %q, want MONOTONIC_USEC=", m.Fields)
	}
	if u, err := strconv.ParseInt(v, 10, 64); err != nil || u <= 0 {
		t.Errorf("MONOTONIC_USEC=%q, want a positive number", v)
	}
}

func TestBarrier(t *testing.T) {
	sock := notifytest.Listen(t)
	n, err := systemd.NewNotifier(sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Notify(systemd.Ready); err != nil {
		t.Fatal(err)
	}
	if err := n.Barrier(ctx); err != nil {
		t.Fatalf("Barrier() = %v, want nil", err)
	}
	msgs := sock.Messages()
	if len(msgs) != 2 || !msgs[1].Has("BARRIER=1") || msgs[1].FDs != 1 {
		t.Fatalf("received %v, want READY=1 then BARRIER=1 with one fd", msgs)
	}
}

func TestBarrierTimesOutWhenNotConfirmed(t *testing.T) {
	sock := notifytest.Listen(t)
	sock.HoldBarriers()
	n, err := systemd.NewNotifier(sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = n.Barrier(ctx)
	if !errors.Is(err, systemd.ErrBarrierTimeout) {
		t.Fatalf("Barrier() = %v, want ErrBarrierTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Barrier() took %v, want about 200ms", d)
	}
}

func TestNilNotifier(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	n, err := systemd.Open()
	if !errors.Is(err, systemd.ErrNotSupervised) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open() error = %v, want ErrNotSupervised matching os.ErrNotExist", err)
	}
	if n != nil {
		t.Fatalf("Open() = %v, want nil", n)
	}
	if err := n.Notify(systemd.Ready); err != nil {
		t.Errorf("nil.Notify() = %v, want nil", err)
	}
	if err := n.Barrier(context.Background()); err != nil {
		t.Errorf("nil.Barrier() = %v, want nil", err)
	}
}

func TestOpenFromEnvironment(t *testing.T) {
	sock := notifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Addr())
	n, err := systemd.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(systemd.Status("up")); err != nil {
		t.Fatal(err)
	}
	sock.WaitFor(t, 0, "STATUS=up", 5*time.Second)
	if os.Getenv("NOTIFY_SOCKET") != sock.Addr() {
		t.Errorf("Open() unset NOTIFY_SOCKET; it must stay for child processes")
	}
}

func TestNewNotifierRejectsBadAddress(t *testing.T) {
	for _, addr := range []string{"", "relative.sock", "x"} {
		if _, err := systemd.NewNotifier(addr); err == nil {
			t.Errorf("NewNotifier(%q) = nil error, want an error", addr)
		}
	}
}

func TestNotifyUnreachableSocket(t *testing.T) {
	n, err := systemd.NewNotifier(t.TempDir() + "/missing.sock")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(systemd.Ready); err == nil {
		t.Error("Notify() to a missing socket = nil, want an error")
	}
}
