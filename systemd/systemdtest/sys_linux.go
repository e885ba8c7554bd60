package systemdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// errLocked is returned when another process holds a lock.
var errLocked = errors.New("locked by another process")

// bootSysProcAttr starts the boot script in its own session and a new mount
// namespace (Go remounts / private recursively in the child before exec)
// and makes the kernel send it SIGTERM, an orderly poweroff of the box,
// if the thread that started it ends.
func bootSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setsid:       true,
		Unshareflags: syscall.CLONE_NEWNS,
		Pdeathsig:    syscall.SIGTERM,
	}
}

// signalProc sends sig to p unless p's PID now names another process.
func signalProc(p proc, sig syscall.Signal) error {
	if p.PID <= 0 {
		return nil
	}
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// The pidfd pins the process: checking its start time now rules out
	// a reused PID.
	if st, err := readStat(p.PID); err != nil || st.start != p.Start {
		return os.ErrProcessDone
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0)
}

// lockDir takes an exclusive flock on the directory dir and returns the
// open directory, whose Close releases the lock. Without wait, it returns
// errLocked if the lock is held elsewhere.
func lockDir(dir string, wait bool) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := flock(f, wait); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lockPort claims port for this process among all processes on the host
// by binding the abstract unix socket @baton-port-<port>, which the kernel
// releases when the process exits. It returns errLocked if another process
// holds the claim.
func lockPort(port int) (io.Closer, error) {
	c, err := net.ListenPacket("unixgram", "@baton-port-"+strconv.Itoa(port))
	if errors.Is(err, unix.EADDRINUSE) {
		return nil, errLocked
	}
	return c, err
}

func flock(f *os.File, wait bool) error {
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(ferr, unix.EWOULDBLOCK) {
		return errLocked
	}
	if ferr != nil {
		return fmt.Errorf("flock %s: %w", f.Name(), ferr)
	}
	return nil
}

// dialInNetns dials with d from a goroutine whose OS thread has joined the
// network namespace ns: the socket is created there. The thread returns to
// its own namespace afterwards; if it cannot, it stays locked and ends with
// the goroutine, so no other goroutine ever runs in the wrong namespace.
func dialInNetns(ctx context.Context, ns *os.File, d *net.Dialer, network, addr string) (net.Conn, error) {
	if ns == nil {
		return nil, errors.New("systemdtest: box has no network namespace")
	}
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		if err := setns(ns, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("systemdtest: enter the box's network namespace: %w", err)}
			return
		}
		conn, err := d.DialContext(ctx, network, addr)
		if setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

func setns(f *os.File, nstype int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Setns(int(fd), nstype) }); err != nil {
		return err
	}
	return serr
}
