//go:build unix

package activation

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"time"

	sdactivation "github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// staleProbeTimeout bounds the connect that tells a stale unix socket file
// from a live one.
const staleProbeTimeout = time.Second

// takeFiles wraps the descriptors p names, marking them close-on-exec. The
// caller unsets the environment.
//
// It first checks that every one of them is an open socket, and if one is
// not it takes none: a count larger than what was really passed would
// otherwise have it wrap, and on error close, descriptors that belong to the
// Go runtime or the program (an *os.File even closes its descriptor when it
// is garbage collected). The descriptors are then only marked close-on-exec.
func takeFiles(p passed) ([]*os.File, error) {
	r := p.fds()
	var errs []error
	notOpen, notOpenAt, notOpenFD := 0, 0, 0 // count, index in errs, first fd
	var notOpenErr error
	for i := 0; i < r.n; i++ {
		fd, name := r.first+i, p.names[i]
		_, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		switch {
		case err == nil:
		case errors.Is(err, unix.EBADF):
			if notOpen == 0 {
				notOpenAt, notOpenFD, notOpenErr = len(errs), fd, err
				errs = append(errs, nil) // filled in below, in fd order
			}
			notOpen++
		case errors.Is(err, unix.ENOTSOCK):
			errs = append(errs, &FDError{FD: fd, Name: name, Err: fmt.Errorf("%w: not a socket", ErrNotStream)})
		default:
			errs = append(errs, &FDError{FD: fd, Name: name, Err: fmt.Errorf("%w: getsockopt SO_TYPE: %w", ErrNotStream, err)})
		}
	}
	if len(errs) > 0 {
		if notOpen > 0 {
			countVar := envFDs
			if p.source == Inherited {
				countVar = envInhFDs
			}
			errs[notOpenAt] = &FDError{FD: notOpenFD, Name: p.names[notOpenFD-r.first], Err: fmt.Errorf(
				"%w: %s=%d names fds %d to %d, but %d of them are not open: %w",
				ErrBadEnvironment, countVar, r.n, r.first, r.first+r.n-1, notOpen, notOpenErr)}
		}
		markCloseOnExec(r)
		return nil, joinErrors(errs...)
	}
	if p.source == Systemd {
		// go-systemd reads the same variables parseEnv checked, marks
		// the descriptors close-on-exec and unsets LISTEN_*.
		files := sdactivation.Files(true)
		if len(files) != r.n {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("activation: %w: %d descriptors taken for %s=%d (the environment changed while being read)",
				ErrBadEnvironment, len(files), envFDs, r.n)
		}
		return files, nil
	}
	files := make([]*os.File, r.n)
	for i := range files {
		fd := r.first + i
		unix.CloseOnExec(fd)
		files[i] = os.NewFile(uintptr(fd), p.names[i])
	}
	return files, nil
}

// markCloseOnExec marks the open descriptors of r close-on-exec, as
// sd_listen_fds(3) does before it looks at the names.
func markCloseOnExec(r fdRange) {
	for fd := r.first; fd < r.first+r.n; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			unix.CloseOnExec(fd)
		}
	}
}

// checkListening reports whether f is a listening stream socket: SO_TYPE
// is SOCK_STREAM and SO_ACCEPTCONN is set. The error wraps ErrNotStream.
func checkListening(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotStream, err)
	}
	var typ, acc int
	var serr error
	err = rc.Control(func(fd uintptr) {
		typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		if serr == nil {
			acc, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		}
	})
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrNotStream, err)
	case errors.Is(serr, unix.ENOTSOCK):
		return fmt.Errorf("%w: not a socket", ErrNotStream)
	case serr != nil:
		return fmt.Errorf("%w: getsockopt: %w", ErrNotStream, serr)
	case typ == unix.SOCK_DGRAM:
		return fmt.Errorf("%w: socket type is SOCK_DGRAM (ListenDatagram=; ask for it with a datagram Network such as \"udp\")", ErrNotStream)
	case typ != unix.SOCK_STREAM:
		return fmt.Errorf("%w: socket type is %s", ErrNotStream, sockType(typ))
	case acc == 0:
		return fmt.Errorf("%w: stream socket is not listening", ErrNotStream)
	}
	return nil
}

// checkConnected reports whether f is a connected stream socket: SO_TYPE
// is SOCK_STREAM, SO_ACCEPTCONN is not set, and it has a peer. The error
// wraps ErrNotStream.
func checkConnected(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotStream, err)
	}
	var typ, acc int
	var serr, perr error
	err = rc.Control(func(fd uintptr) {
		typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		if serr == nil {
			acc, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		}
		if serr == nil {
			_, perr = unix.Getpeername(int(fd))
		}
	})
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrNotStream, err)
	case errors.Is(serr, unix.ENOTSOCK):
		return fmt.Errorf("%w: a stored connection that is not a socket", ErrNotStream)
	case serr != nil:
		return fmt.Errorf("%w: getsockopt: %w", ErrNotStream, serr)
	case typ != unix.SOCK_STREAM:
		return fmt.Errorf("%w: a stored connection of socket type %s", ErrNotStream, sockType(typ))
	case acc != 0:
		return fmt.Errorf("%w: a stored connection that is a listening socket", ErrNotStream)
	case perr != nil:
		return fmt.Errorf("%w: a stored connection without a peer: %w", ErrNotStream, perr)
	}
	return nil
}

// checkDatagram reports whether f is a datagram socket (SO_TYPE is
// SOCK_DGRAM). The error wraps ErrNotDatagram.
func checkDatagram(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotDatagram, err)
	}
	var typ int
	var serr error
	err = rc.Control(func(fd uintptr) {
		typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	})
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrNotDatagram, err)
	case errors.Is(serr, unix.ENOTSOCK):
		return fmt.Errorf("%w: not a socket", ErrNotDatagram)
	case serr != nil:
		return fmt.Errorf("%w: getsockopt: %w", ErrNotDatagram, serr)
	case typ == unix.SOCK_STREAM:
		return fmt.Errorf("%w: socket type is SOCK_STREAM (ListenStream=; a datagram socket is ListenDatagram=)", ErrNotDatagram)
	case typ != unix.SOCK_DGRAM:
		return fmt.Errorf("%w: socket type is %s", ErrNotDatagram, sockType(typ))
	}
	return nil
}

func sockType(t int) string {
	switch t {
	case unix.SOCK_DGRAM:
		return "SOCK_DGRAM"
	case unix.SOCK_SEQPACKET:
		return "SOCK_SEQPACKET"
	case unix.SOCK_RAW:
		return "SOCK_RAW"
	}
	return strconv.Itoa(t)
}

// listenerFile returns a duplicate of the descriptor under a listener
// Listen bound (close-on-exec, as Go makes every descriptor).
func listenerFile(l net.Listener) (*os.File, error) {
	switch l := l.(type) {
	case *net.TCPListener:
		return l.File()
	case *net.UnixListener:
		return l.File()
	}
	return nil, fmt.Errorf("%T has no file", l)
}

// packetFile returns a duplicate of the descriptor under a datagram
// socket Listen bound.
func packetFile(pc net.PacketConn) (*os.File, error) {
	switch pc := pc.(type) {
	case *net.UDPConn:
		return pc.File()
	case *net.UnixConn:
		return pc.File()
	}
	return nil, fmt.Errorf("%T has no file", pc)
}

// keepSocketPath stops the Close of a listener Listen bound from unlinking
// its path.
func keepSocketPath(l *net.UnixListener) { l.SetUnlinkOnClose(false) }

// removeStale removes a unix socket file at path that nobody listens on:
// one left behind by a process that died, or whose Set was handed on. It
// leaves alone an abstract address, a path that is not a socket (an error)
// and a socket someone accepts on (an error wrapping EADDRINUSE); when the
// probe is inconclusive it leaves the path to bind to report.
func removeStale(ctx context.Context, path string) error {
	if path == "" || path[0] == '@' {
		return nil
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen unix %s: %w and is not a socket; not removing it", path, fs.ErrExist)
	}
	ctx, cancel := context.WithTimeout(ctx, staleProbeTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen unix %s: %w: something accepts connections on it", path, unix.EADDRINUSE)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen unix %s: removing the stale socket: %w", path, err)
	}
	return nil
}
