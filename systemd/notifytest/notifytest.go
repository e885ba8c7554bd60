// Package notifytest is the receiving end of the sd_notify protocol for
// tests: a real unixgram socket in a temporary directory that records every
// datagram and, like systemd, closes the descriptors sent with BARRIER=1
// once it has read the message.
package notifytest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Message is one received datagram.
type Message struct {
	// Fields holds the NAME=value assignments in order.
	Fields []string
	// FDs is how many descriptors came with the datagram.
	FDs int
	// Time is when it was read.
	Time time.Time
}

// Get returns the value of the first assignment of name, and whether there
// was one.
func (m Message) Get(name string) (string, bool) {
	for _, f := range m.Fields {
		if k, v, ok := strings.Cut(f, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// Has reports whether the message contains exactly the assignment kv
// (for example "READY=1").
func (m Message) Has(kv string) bool {
	for _, f := range m.Fields {
		if f == kv {
			return true
		}
	}
	return false
}

func (m Message) String() string { return strings.Join(m.Fields, " ") }

// Socket is a notify socket. Its zero value is not usable; call Listen.
type Socket struct {
	conn *net.UnixConn
	addr string

	mu     sync.Mutex
	msgs   []Message
	notify chan struct{}
	// holdBarrier, when set before a BARRIER=1 arrives, keeps its
	// descriptor open instead of closing it, so that the sender's barrier
	// times out.
	holdBarrier bool
	held        []int
	// keepStored, when set, keeps the descriptors of FDSTORE=1 messages
	// by FDNAME= as systemd's store does.
	keepStored bool
	stored     map[string][]int
}

// Listen opens a notify socket in t.TempDir() and closes it when the test
// ends.
func Listen(t testing.TB) *Socket {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("notifytest: listen %s: %v", addr, err)
	}
	s := &Socket{conn: conn, addr: addr, notify: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.read()
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		s.mu.Lock()
		for _, fd := range s.held {
			syscall.Close(fd)
		}
		for _, fds := range s.stored {
			for _, fd := range fds {
				syscall.Close(fd)
			}
		}
		s.mu.Unlock()
	})
	return s
}

// Addr is the socket's path, the value for NOTIFY_SOCKET.
func (s *Socket) Addr() string { return s.addr }

// HoldBarriers makes the socket keep the descriptors of later BARRIER=1
// messages open, as a service manager that never answers would.
func (s *Socket) HoldBarriers() {
	s.mu.Lock()
	s.holdBarrier = true
	s.mu.Unlock()
}

// KeepStored makes the socket keep the descriptors of later FDSTORE=1
// messages under their FDNAME=, and close them at FDSTOREREMOVE=1, as
// systemd's file descriptor store does, instead of closing them at once.
func (s *Socket) KeepStored() {
	s.mu.Lock()
	s.keepStored = true
	if s.stored == nil {
		s.stored = map[string][]int{}
	}
	s.mu.Unlock()
}

// TakeStored returns the descriptors kept under name, in the order they
// came, as files the caller owns: the socket no longer holds them.
func (s *Socket) TakeStored(name string) []*os.File {
	s.mu.Lock()
	fds := s.stored[name]
	delete(s.stored, name)
	s.mu.Unlock()
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), name)
	}
	return files
}

func (s *Socket) read() {
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(16*4))
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var fds []int
		if oobn > 0 {
			cmsgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
			if err == nil {
				for _, c := range cmsgs {
					if rights, err := syscall.ParseUnixRights(&c); err == nil {
						fds = append(fds, rights...)
					}
				}
			}
		}
		m := Message{FDs: len(fds), Time: time.Now()}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line != "" {
				m.Fields = append(m.Fields, line)
			}
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		if s.holdBarrier && m.Has("BARRIER=1") {
			s.held = append(s.held, fds...)
			fds = nil
		}
		if s.keepStored {
			name, _ := m.Get("FDNAME")
			switch {
			case m.Has("FDSTORE=1"):
				s.stored[name] = append(s.stored[name], fds...)
				fds = nil
			case m.Has("FDSTOREREMOVE=1"):
				fds = append(fds, s.stored[name]...)
				delete(s.stored, name)
			}
		}
		close(s.notify)
		s.notify = make(chan struct{})
		s.mu.Unlock()
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}
}

// Messages returns a copy of everything received so far.
func (s *Socket) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Wait returns the first message, counting from index from, for which
// match returns true, and its index. It fails when ctx ends first.
func (s *Socket) Wait(ctx context.Context, from int, match func(Message) bool) (Message, int, error) {
	for {
		s.mu.Lock()
		for i := from; i < len(s.msgs); i++ {
			if match(s.msgs[i]) {
				m := s.msgs[i]
				s.mu.Unlock()
				return m, i, nil
			}
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Message{}, -1, fmt.Errorf("notifytest: no matching message (have %v): %w", s.Messages(), context.Cause(ctx))
		}
	}
}

// WaitFor waits up to timeout for a message containing the assignment kv
// (e.g. "READY=1") at or after index from, failing the test otherwise.
func (s *Socket) WaitFor(t testing.TB, from int, kv string, timeout time.Duration) (Message, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m, i, err := s.Wait(ctx, from, func(m Message) bool { return m.Has(kv) })
	if err != nil {
		t.Fatalf("waiting for %s: %v", kv, err)
	}
	return m, i
}
