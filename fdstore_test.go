package baton_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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

// TestRunStoresIdleConnections: with a file descriptor store, a stop puts
// each idle kept-alive connection in it (FDSTORE=1, FDNAME=conn-<socket>)
// instead of closing it. A stored descriptor is the client's own TCP
// connection: an answer written on it reaches the client. The store's
// capacity ($FDSTORE, or Options.FDStoreMax) bounds what goes: the rest
// closes as without the store, and without a known capacity none goes.
// KeepConnectionsHere stores none (the contrast).
func TestRunStoresIdleConnections(t *testing.T) {
	const clients = 5
	for _, tc := range []struct {
		name     string
		env      string // $FDSTORE; "" unset
		fdStore  bool
		storeMax int
		keep     bool
		want     int
	}{
		{"FDStoreMax=16", "", true, 16, false, clients},
		{"FDSTORE=4", "4", false, 0, false, 3}, // the bound socket takes a place
		// Without the store's size, systemd would close what does not fit.
		{"FDStore, size unknown", "", true, 0, false, 0},
		{"contrast/KeepConnectionsHere", "", true, 16, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notify := notifytest.Listen(t)
			notify.KeepStored()
			t.Setenv("NOTIFY_SOCKET", notify.Addr())
			t.Setenv("RUNTIME_DIRECTORY", "")
			t.Setenv("FDSTORE", tc.env)
			if tc.env == "" {
				os.Unsetenv("FDSTORE")
			}
			addr := freeAddr(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- baton.Run(ctx, baton.Options{FDStore: tc.fdStore, FDStoreMax: tc.storeMax, KeepConnectionsHere: tc.keep, IdleGrace: 10 * time.Millisecond, Logger: &testLog{}},
					baton.HTTP(baton.Socket{Name: "web", Address: addr}, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						io.WriteString(w, "here\n")
					})}),
				)
			}()
			notify.WaitFor(t, 0, "READY=1", 15*time.Second)
			byPort := map[string]*bufio.Reader{}
			for range clients {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(15 * time.Second))
				br := bufio.NewReader(c)
				fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil || resp.Close {
					t.Fatalf("first answer: %v, %v", resp, err)
				}
				io.Copy(io.Discard, resp.Body)
				byPort[c.LocalAddr().String()] = br
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
			stored := notify.TakeStored("conn-web")
			if len(stored) != tc.want {
				t.Errorf("%d connections stored as conn-web, want %d", len(stored), tc.want)
			}
			for _, f := range stored {
				nc, err := net.FileConn(f)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				br := byPort[nc.RemoteAddr().String()]
				if br == nil {
					t.Errorf("stored connection from %v is none of the clients'", nc.RemoteAddr())
					nc.Close()
					continue
				}
				delete(byPort, nc.RemoteAddr().String())
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nnext!\n")
				nc.Close()
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Errorf("client %v: %v, want the answer written on the stored descriptor", nc.RemoteAddr(), err)
					continue
				}
				if b, _ := io.ReadAll(resp.Body); string(b) != "next!\n" {
					t.Errorf("client %v read %q, want the answer written on the stored descriptor", nc.RemoteAddr(), b)
				}
			}
			// The others were closed here, as without the store.
			for port, br := range byPort {
				if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
					t.Errorf("client %s, not stored: read %v, want EOF", port, err)
				}
			}
		})
	}
}
