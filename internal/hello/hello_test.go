package hello_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/hello"
)

func TestRoutes(t *testing.T) {
	srv := httptest.NewServer(hello.New("1.2.3", 0))
	defer srv.Close()
	tests := []struct {
		path   string
		status int
		body   string
	}{
		{"/", 200, "hello world\n"},
		{"/healthz", 200, "ok\n"},
		{"/slow?ms=20", 200, "slept 20 ms\n"},
		{"/slow?ms=-1", 400, ""},
		{"/slow?ms=120001", 400, ""},
		{"/other", 404, ""},
	}
	for _, tt := range tests {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || (tt.body != "" && string(b) != tt.body) {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, resp.StatusCode, b, tt.status, tt.body)
		}
		if got := resp.Header.Get("X-Webapp-Pid"); got != strconv.Itoa(os.Getpid()) {
			t.Errorf("GET %s X-Webapp-Pid = %q, want %d", tt.path, got, os.Getpid())
		}
		if got := resp.Header.Get("X-Webapp-Version"); got != "1.2.3" {
			t.Errorf("GET %s X-Webapp-Version = %q, want 1.2.3", tt.path, got)
		}
	}
}

func TestHealthFailsAfterSwitch(t *testing.T) {
	const after = 500 * time.Millisecond
	start := time.Now()
	srv := httptest.NewServer(hello.New("x", after))
	defer srv.Close()
	get := func() int {
		resp, err := http.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// An answer that came before the switch must be 200.
	if got := get(); got != 200 && time.Since(start) < after {
		t.Errorf("GET /healthz before the switch = %d, want 200", got)
	}
	// After it, 503.
	deadline := time.Now().Add(10 * time.Second)
	for time.Since(start) < after {
		time.Sleep(20 * time.Millisecond)
	}
	for {
		got := get()
		if got == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /healthz %v after the switch = %d, want 503", time.Since(start)-after, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEcho answers real datagrams on a loopback UDP socket.
func TestEcho(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	echo := hello.Echo()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			echo(pc, buf[:n], from)
		}
	}()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pid := strconv.Itoa(os.Getpid())
	for _, payload := range []string{"ping", "", "two words\n", string(make([]byte, 1000))} {
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2000)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("answer to %q: %v", payload, err)
		}
		if got, want := string(buf[:n]), pid+" "+payload; got != want {
			t.Errorf("Echo(%q) answered %q, want %q", payload, got, want)
		}
	}
}
