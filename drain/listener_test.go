package drain

import (
	"net"
	"testing"
)

// stubListener accepts the same connection forever.
type stubListener struct {
	net.Listener
	c net.Conn
}

func (l stubListener) Accept() (net.Conn, error) { return l.c, nil }

// The Drainer's listener costs a served accept no allocation.
func TestAcceptAllocatesNothing(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	l := newListener(stubListener{c: a}, New(Options{}), false)
	if n := testing.AllocsPerRun(1000, func() { l.Accept() }); n != 0 {
		t.Errorf("Accept() allocates %v times per call, want 0", n)
	}
}
