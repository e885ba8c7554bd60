package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDialer opens TCP connections from inside a network namespace (a
// sandbox's own, with its own loopback) for clients in the benchmark's
// process. A socket keeps the namespace it was created in, so one
// goroutine, locked to its thread and moved into the namespace for good,
// creates the sockets, and the caller's goroutine connects them through
// Go's poller: any number of dials can be under way at once without as
// many threads sitting in the namespace (systemdtest.Box.DialContext
// holds a thread for each dial until it connects).
type netnsDialer struct {
	req chan chan socketResult
}

type socketResult struct {
	fd  int
	err error
}

// newNetnsDialer returns a dialer into the network namespace at nsPath
// (/proc/PID/ns/net); it stops at the end of the test.
func newNetnsDialer(t testing.TB, nsPath string) *netnsDialer {
	t.Helper()
	d := &netnsDialer{req: make(chan chan socketResult)}
	ready := make(chan error, 1)
	go func() {
		// The thread goes back to its own namespace before it is
		// unlocked. A thread left in another one would end with this
		// goroutine, except the process's main thread, which Go keeps:
		// /proc/self/ns/net, /proc/net and the threads it starts after
		// would then be the sandbox's.
		runtime.LockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ready <- err
			return
		}
		defer unix.Close(own)
		ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(ns, unix.CLONE_NEWNET)
			unix.Close(ns)
		}
		ready <- err
		if err != nil {
			runtime.UnlockOSThread()
			return
		}
		for reply := range d.req {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			reply <- socketResult{fd, err}
		}
		if unix.Setns(own, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else still locked: the thread ends with the goroutine
	}()
	if err := <-ready; err != nil {
		t.Fatalf("enter the network namespace %s: %v", nsPath, err)
	}
	t.Cleanup(func() { close(d.req) })
	return d
}

// DialContext connects to addr, a numeric IPv4 host:port, from inside
// the namespace. Its signature fits load.Options.Dial.
func (d *netnsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() || network != "tcp" {
		return nil, fmt.Errorf("netns dial %s %s: want tcp to a numeric IPv4 address", network, addr)
	}
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	// A context already ended ends the dial here: the select below picks
	// either case when both are ready, and a loopback connect is done at
	// once.
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	reply := make(chan socketResult, 1)
	select {
	case d.req <- reply:
	case <-ctx.Done():
		return nil, opErr(ctx.Err())
	}
	r := <-reply
	if r.err != nil {
		return nil, opErr(os.NewSyscallError("socket", r.err))
	}
	// A non-blocking descriptor: the File is pollable.
	f := os.NewFile(uintptr(r.fd), "tcp")
	defer f.Close()
	if dl, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, opErr(err)
	}
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	started := false
	var cerr error
	// The first call connects; each later one, after the poller saw the
	// socket writable, checks whether the connection is up, as net's own
	// dial does.
	werr := rc.Write(func(fd uintptr) bool {
		if !started {
			started = true
			switch err := unix.Connect(int(fd), sa); {
			case err == nil:
				return true
			case errors.Is(err, unix.EINPROGRESS) || errors.Is(err, unix.EINTR):
				return false
			default:
				cerr = os.NewSyscallError("connect", err)
				return true
			}
		}
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = os.NewSyscallError("getsockopt", err)
			return true
		case v == int(unix.EINPROGRESS) || v == int(unix.EALREADY) || v == int(unix.EINTR):
			return false
		case v != 0 && v != int(unix.EISCONN):
			cerr = os.NewSyscallError("connect", syscall.Errno(v))
			return true
		}
		if _, err := unix.Getpeername(int(fd)); err != nil {
			return false // not connected yet: woken early
		}
		return true
	})
	if werr != nil {
		if ctx.Err() != nil {
			werr = ctx.Err()
		}
		return nil, opErr(werr)
	}
	if cerr != nil {
		return nil, opErr(cerr)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, opErr(err)
	}
	return c, nil
}

// TestNetnsDialer dials through the namespace the test itself runs in:
// a connection that is accepted, one that is refused, one that cannot
// finish before its deadline.
func TestNetnsDialer(t *testing.T) {
	requireRoot(t) // setns needs root
	// The namespace of the thread that makes the listener (the process's
	// main thread, /proc/self's, need not be where this one is).
	runtime.LockOSThread()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	nsPath := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	d := newNetnsDialer(t, nsPath)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i := range 100 {
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("DialContext #%d = %v, want a connection", i, err)
		}
		buf := make([]byte, 2)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" || c.RemoteAddr().String() != ln.Addr().String() {
			t.Fatalf("read on dialed connection = %q, %v (remote %v), want \"hi\" from %v", buf, err, c.RemoteAddr(), ln.Addr())
		}
		c.Close()
	}
	// A port nobody listens on: refused.
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := free.Addr().String()
	free.Close()
	if _, err := d.DialContext(ctx, "tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("DialContext(closed port) = %v, want ECONNREFUSED", err)
	}
	// A cancelled context ends the dial.
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	if _, err := d.DialContext(done, "tcp", ln.Addr().String()); !errors.Is(err, context.Canceled) {
		t.Errorf("DialContext(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := d.DialContext(ctx, "tcp", "localhost:80"); err == nil {
		t.Error("DialContext(a name) = nil error, want one")
	}
}
