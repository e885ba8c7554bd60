package baton

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/systemd"
)

// connStore is where a stop puts the idle plaintext HTTP/1.1 connections
// when the unit has a file descriptor store of a known size: systemd keeps them while the
// service restarts and passes them to the next start, which goes on
// serving them (adoptStored). Their clients keep their TCP connection
// across `systemctl restart` as across a reload. A plain stop loses
// nothing by it either: systemd closes what the store holds once the unit
// is inactive (FileDescriptorStorePreserve=restart, the default).
type connStore struct {
	notifier *systemd.Notifier
	limit    int // how many connections fit
	stored   atomic.Int64
}

// newConnStore returns the connection store of this start, or nil when
// connections do not go to the store: no service manager, no store's
// size known (neither $FDSTORE nor Options.FDStoreMax: systemd closes
// what does not fit, and a connection it closes is lost), or
// Options.KeepConnectionsHere.
func newConnStore(opts Options, notifier *systemd.Notifier, set *activation.Set) *connStore {
	if notifier == nil || opts.KeepConnectionsHere {
		return nil
	}
	capacity, told := systemd.StoreCapacity()
	if !told {
		capacity = opts.FDStoreMax
	}
	if capacity <= 0 {
		return nil
	}
	// The sockets take their places: stored by storeBound, or passed
	// back from the store (sockets of a .socket unit are not in it, but
	// nothing here tells them apart: they leave a place or two unused).
	limit := capacity - len(set.Files())
	if limit <= 0 {
		opts.Logger.Warnf("file descriptor store: FileDescriptorStoreMax=%d holds only the sockets: connections close at a stop", capacity)
		return nil
	}
	return &connStore{notifier: notifier, limit: limit}
}

// errStoreFull ends the storing of a stop: the connections left drain
// here as without the store.
var errStoreFull = errors.New("the file descriptor store is full")

// mover returns the move of a connection of socket into the store.
func (cs *connStore) mover(socket string) func(net.Conn) error {
	name := activation.ConnName(socket)
	return func(c net.Conn) error {
		sc, ok := c.(syscall.Conn)
		if !ok {
			return fmt.Errorf("%T has no descriptor", c)
		}
		if n := cs.stored.Add(1); n > int64(cs.limit) {
			cs.stored.Add(-1)
			return fmt.Errorf("%w (FileDescriptorStoreMax= leaves room for %d connections)", errStoreFull, cs.limit)
		}
		if err := cs.notifier.Store(name, sc); err != nil {
			cs.stored.Add(-1)
			return err
		}
		return nil
	}
}

// armStore has the stop's drain put each connection that can move into the
// store instead of closing it.
func (g *group) armStore() {
	if g.store == nil {
		return
	}
	for _, s := range g.servers {
		if k, ok := s.kind.(connMover); ok && k.canMove() {
			k.handOver(g.store.mover(s.sock.Name))
		}
	}
}

// adoptStored serves the connections a previous start put in the file
// descriptor store (activation.ConnName), as connections a reload passes
// on are, and removes them from the store: a later start must not get
// them again. Those that cannot be served are closed, with a warning.
func (g *group) adoptStored(notifier *systemd.Notifier) {
	names := g.set.ConnNames()
	if len(names) == 0 {
		return
	}
	log := g.opts.Logger
	for _, err := range g.set.Dropped() {
		log.Warnf("file descriptor store: %v", err)
	}
	n := 0
	for _, s := range g.servers {
		for _, c := range g.set.TakeConns(s.sock.Name) {
			g.adopt(s.sock.Name, c)
			n++
		}
	}
	// Stored for a socket no server serves now (an Optional one not
	// passed this time).
	for _, name := range names {
		for _, c := range g.set.TakeConns(name[len(activation.ConnPrefix):]) {
			c.Close()
			log.Warnf("file descriptor store: a connection stored as %q, which no server here serves: closed", name)
		}
	}
	for _, name := range names {
		if err := notifier.RemoveStored(name); err != nil {
			log.Warnf("file descriptor store: %v", err)
		}
	}
	if n > 0 {
		log.Infof("took %d connections back from systemd's file descriptor store: serving them on", n)
	}
}
