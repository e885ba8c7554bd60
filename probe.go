package baton

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// probe checks that the HTTP server still serves: it sends GET <path>
// through an in-memory connection that the server accepts like any other,
// so a wedged accept loop, handler or health check all make it fail.
type probe struct {
	path   string
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newProbe(path string) *probe {
	return &probe{path: path, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept, Close and Addr make the probe a net.Listener for the server.
func (p *probe) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	}
}

func (p *probe) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *probe) Addr() net.Addr { return probeAddr{} }

type probeAddr struct{}

func (probeAddr) Network() string { return "pipe" }
func (probeAddr) String() string  { return "probe" }

// Check sends one request and wants a 2xx answer.
func (p *probe) Check(ctx context.Context) error {
	server, client := net.Pipe()
	defer client.Close()
	select {
	case p.conns <- server:
	case <-p.closed:
		server.Close()
		return fmt.Errorf("health probe: server stopped")
	case <-ctx.Done():
		server.Close()
		return fmt.Errorf("health probe: not accepted: %w", context.Cause(ctx))
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(5 * time.Second)
	}
	client.SetDeadline(dl)
	if _, err := fmt.Fprintf(client, "GET %s HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n", p.path); err != nil {
		return fmt.Errorf("health probe: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		return fmt.Errorf("health probe: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("health probe: %s: %s", resp.Status, bytesTrim(body))
	}
	return nil
}

func bytesTrim(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return string(b)
}
