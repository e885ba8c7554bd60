//go:build linux

package systemd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// send writes one datagram to addr, with the descriptors in fds attached as
// SCM_RIGHTS.
func send(addr string, msg []byte, fds []int) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// A leading '@' names an abstract socket, which the kernel spells with a
	// leading NUL; x/sys/unix does that conversion for '@'.
	n, err := unix.SendmsgN(fd, msg, oob, &unix.SockaddrUnix{Name: addr}, unix.MSG_NOSIGNAL)
	if err != nil {
		return err
	}
	if n != len(msg) {
		return fmt.Errorf("short write: %d of %d bytes", n, len(msg))
	}
	return nil
}

func barrier(ctx context.Context, addr string) error {
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
		sendErr = send(addr, []byte("BARRIER=1"), []int{int(fd)})
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
