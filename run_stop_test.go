package baton_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/baton-dev/baton"
)

// TestRunStopAnswersDatagramInHand: a datagram read just as the stop
// begins is still answered. The socket closes once its handler has
// returned, not under it (its answer would fail with "use of closed
// network connection", and the datagram, taken from the socket's queue,
// would be lost).
func TestRunStopAnswersDatagramInHand(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("RUNTIME_DIRECTORY", "")
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()

	inHand := make(chan struct{}, 1)
	draining := make(chan struct{})
	wrote := make(chan error, 1)
	handler := func(pc net.PacketConn, b []byte, from net.Addr) {
		select {
		case inHand <- struct{}{}:
		default:
			return // only the first datagram is held across the stop
		}
		<-draining
		time.Sleep(100 * time.Millisecond) // the stop goes on meanwhile
		_, err := pc.WriteTo(append([]byte("answer "), b...), from)
		wrote <- err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, baton.Options{OnDrain: func() { close(draining) }},
			baton.Datagram(baton.Socket{Name: "udp", Network: "udp", Address: addr}, handler))
	}()

	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Until the handler holds a datagram (Run binds the socket first).
	for held := false; !held; {
		if _, err := c.Write([]byte("1")); err != nil {
			t.Logf("send: %v (not bound yet)", err)
		}
		select {
		case <-inHand:
			held = true
		case err := <-done:
			t.Fatalf("Run() = %v before the stop", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	cancel()
	if err := <-wrote; err != nil {
		t.Errorf("the handler's answer after the stop began: %v, want it sent", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "answer 1" {
		t.Errorf("answer = %q, %v; want \"answer 1\"", buf[:n], err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v after the stop, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the stop")
	}
}
