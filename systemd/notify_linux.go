//go:build linux

package systemd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// send writes one datagram to addr, with the descriptors in fds attached as
// SCM_RIGHTS.
// sender keeps one datagram socket for all of a Notifier's messages, from
// the first one on: a service that has run out of descriptors can still
// tell the service manager so.
type sender struct {
	mu   sync.Mutex
	fd   int // valid when open
	open bool
}

func (s *sender) send(addr string, msg []byte, fds []int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		s.fd, s.open = fd, true
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// A leading '@' names an abstract socket, which the kernel spells with a
	// leading NUL; x/sys/unix does that conversion for '@'.
	n, err := unix.SendmsgN(s.fd, msg, oob, &unix.SockaddrUnix{Name: addr}, unix.MSG_NOSIGNAL)
	if err != nil {
		return err
	}
	if n != len(msg) {
		return fmt.Errorf("short write: %d of %d bytes", n, len(msg))
	}
	return nil
}

func barrier(ctx context.Context, s *sender, addr string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	sc, err := w.SyscallConn()
	if err != nil {
		w.Close()
		return err
	}
	var sendErr error
	err = sc.Control(func(fd uintptr) {
		sendErr = s.send(addr, []byte("BARRIER=1"), []int{int(fd)})
	})
	w.Close() // the service manager now holds the only write end
	if err != nil {
		return err
	}
	if sendErr != nil {
		return sendErr
	}
	// The read end reports EOF once every copy of the write end is closed,
	// which systemd does after processing the messages before the barrier.
	if dl, ok := ctx.Deadline(); ok {
		if err := r.SetReadDeadline(dl); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			r.SetReadDeadline(time.Now())
		case <-done:
		}
	}()
	var buf [1]byte
	for {
		_, err := r.Read(buf[:])
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Errorf("%w: %w", ErrBarrierTimeout, context.Cause(ctx))
		case err != nil:
			return err
		}
	}
}
