package baton_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/systemd/notifytest"
)

// TestRunStoresBoundSockets: Run gives the sockets it binds itself to the
// file descriptor store when Options.FDStore or $FDSTORE asks for it, and
// only then.
func TestRunStoresBoundSockets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fdStore bool
		env     string // $FDSTORE; "" unset
		want    bool
	}{
		{"off", false, "", false},
		{"flag", true, "", true},
		{"FDSTORE=4", false, "4", true},
		{"FDSTORE=0", false, "0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notify := notifytest.Listen(t)
			t.Setenv("NOTIFY_SOCKET", notify.Addr())
			t.Setenv("RUNTIME_DIRECTORY", "")
			t.Setenv("FDSTORE", tc.env)
			if tc.env == "" {
				os.Unsetenv("FDSTORE")
			}
			addr, udpAddr := freeAddr(t), freeUDPAddr(t)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- baton.Run(ctx, baton.Options{FDStore: tc.fdStore, IdleGrace: 10 * time.Millisecond, Logger: &testLog{}},
					baton.HTTP(baton.Socket{Name: "web", Address: addr}, &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}),
					baton.Datagram(baton.Socket{Name: "udp", Address: udpAddr}, func(net.PacketConn, []byte, net.Addr) {}),
				)
			}()
			notify.WaitFor(t, 0, "READY=1", 15*time.Second)
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
			stored := map[string]int{}
			for _, m := range notify.Messages() {
				if m.Has("FDSTORE=1") {
					name, _ := m.Get("FDNAME")
					stored[name] += m.FDs
				}
			}
			if tc.want && (stored["web"] != 1 || stored["udp"] != 1 || len(stored) != 2) {
				t.Errorf("stored %v, want web and udp with one descriptor each", stored)
			}
			if !tc.want && len(stored) != 0 {
				t.Errorf("stored %v, want nothing", stored)
			}
		})
	}
}
