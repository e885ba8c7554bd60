package systemd_test

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd"
	"github.com/baton-dev/baton/systemd/notifytest"
)

func listenerFile(t *testing.T) *os.File {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestStore(t *testing.T) {
	sock := notifytest.Listen(t)
	n, err := systemd.NewNotifier(sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	one, two := listenerFile(t), listenerFile(t)
	if err := n.Store("http", one); err != nil {
		t.Fatalf("Store(http, 1 file) = %v", err)
	}
	m, next := sock.WaitFor(t, 0, "FDSTORE=1", 5*time.Second)
	if got := strings.Join(m.Fields, "|"); got != "FDSTORE=1|FDNAME=http" || m.FDs != 1 {
		t.Errorf("Store(http, 1 file) sent %q with %d fds, want FDSTORE=1|FDNAME=http with 1", got, m.FDs)
	}
	if err := n.Store("pair", one, two); err != nil {
		t.Fatalf("Store(pair, 2 files) = %v", err)
	}
	m, next = sock.WaitFor(t, next, "FDNAME=pair", 5*time.Second)
	if m.FDs != 2 {
		t.Errorf("Store(pair, 2 files) sent %d fds, want 2", m.FDs)
	}
	if err := n.RemoveStored("http"); err != nil {
		t.Fatalf("RemoveStored(http) = %v", err)
	}
	m, _ = sock.WaitFor(t, next, "FDSTOREREMOVE=1", 5*time.Second)
	if got := strings.Join(m.Fields, "|"); got != "FDSTOREREMOVE=1|FDNAME=http" || m.FDs != 0 {
		t.Errorf("RemoveStored(http) sent %q with %d fds, want FDSTOREREMOVE=1|FDNAME=http with none", got, m.FDs)
	}
	// The caller keeps its files.
	if _, err := net.FileListener(one); err != nil {
		t.Errorf("the stored file is no longer usable: %v", err)
	}
}

func TestStoreRejectsBadNames(t *testing.T) {
	sock := notifytest.Listen(t)
	n, err := systemd.NewNotifier(sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	f := listenerFile(t)
	for _, name := range []string{"", "a:b", "tab\there", strings.Repeat("x", 256), "caf\u00e9"} {
		if err := n.Store(name, f); !errors.Is(err, systemd.ErrBadFDName) {
			t.Errorf("Store(%q) = %v, want ErrBadFDName", name, err)
		}
		if err := n.RemoveStored(name); !errors.Is(err, systemd.ErrBadFDName) {
			t.Errorf("RemoveStored(%q) = %v, want ErrBadFDName", name, err)
		}
	}
	// A datagram sent after them arrives after anything they sent.
	if err := n.Notify(systemd.Ready); err != nil {
		t.Fatal(err)
	}
	sock.WaitFor(t, 0, "READY=1", 5*time.Second)
	if got := sock.Messages(); len(got) != 1 {
		t.Errorf("bad names sent datagrams: %v, want none", got[:len(got)-1])
	}
	var nilN *systemd.Notifier
	if err := nilN.Store("http", f); err != nil {
		t.Errorf("nil Notifier: Store = %v, want nil", err)
	}
	if err := nilN.RemoveStored("http"); err != nil {
		t.Errorf("nil Notifier: RemoveStored = %v, want nil", err)
	}
}

func TestStoreCapacity(t *testing.T) {
	for _, tc := range []struct {
		env  string
		set  bool
		want int
		ok   bool
	}{
		{"", false, 0, false},
		{"4", true, 4, true},
		{"0", true, 0, true},
		{"-1", true, 0, false},
		{"many", true, 0, false},
	} {
		if tc.set {
			t.Setenv("FDSTORE", tc.env)
		} else {
			t.Setenv("FDSTORE", "")
			os.Unsetenv("FDSTORE")
		}
		n, ok := systemd.StoreCapacity()
		if n != tc.want || ok != tc.ok {
			t.Errorf("FDSTORE=%q (set %v): StoreCapacity() = %d, %v, want %d, %v", tc.env, tc.set, n, ok, tc.want, tc.ok)
		}
	}
}
