package upgrade_test

import (
	"context"
	"errors"
	"log"
	"net"
	"os"

	"github.com/baton-dev/baton/upgrade"
)

// The new generation takes the connections the old one passes: it says
// so between Ready and Accepting, and serves what arrives once it is the
// service.
func ExampleHandoff_ReceiveConns() {
	h, err := upgrade.Inherited()
	if errors.Is(err, upgrade.ErrNotInherited) {
		return // started afresh: nothing to take
	}
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := h.Ready(ctx); err != nil {
		os.Exit(1)
	}
	takes := h.TakeConns() == nil // ErrNoConns: an older old generation
	// … start accepting on the inherited listeners …
	if err := h.Accepting(ctx); err != nil && !errors.Is(err, upgrade.ErrOrphaned) {
		os.Exit(1)
	}
	if takes {
		// Until the old generation closes the channel (its drain is
		// done, or it exited).
		err := h.ReceiveConns(func(name string, c net.Conn) {
			go serve(name, c) // the old generation waits while fn runs
		})
		if err != nil {
			log.Print(err)
		}
	}
}

// serve serves a connection that came from the old generation, from the
// socket named name.
func serve(name string, c net.Conn) { c.Close() }

// The old generation passes what its drain would close, and closes its
// own copy once it is sent.
func ExampleOptions_onConns() {
	var sender *upgrade.ConnSender
	opts := upgrade.Options{
		Path: "/usr/bin/webapp",
		// Called after the new generation is the main process, before
		// OnCommit: arm the drain here.
		OnConns: func(s *upgrade.ConnSender) { sender = s },
	}
	_ = opts
	// In the drain, for each idle connection c (no read under way):
	pass := func(c *net.TCPConn) {
		if sender == nil || sender.Send("http", c) != nil {
			c.Close() // the old way: the client reconnects
			return
		}
		c.Close() // the new generation has its own descriptor
	}
	_ = pass
	// When the drain is done: the new generation's ReceiveConns returns.
	if sender != nil {
		sender.Close()
	}
}
