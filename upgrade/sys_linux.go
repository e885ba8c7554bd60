//go:build linux

package upgrade

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

func peerCredUID(fd int) (int, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, err
	}
	return int(cred.Uid), nil
}

func markCloseOnExec(fd int) { syscall.CloseOnExec(fd) }

// listenUnixPrivate binds a unix socket that only its owner can connect
// to: the umask is tightened around bind, so that there is no moment at
// which others could connect.
func listenUnixPrivate(path string) (*net.UnixListener, error) {
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}

// socketpair returns the two ends of a close-on-exec unix stream pair,
// named name and name-child.
func socketpair(name string) (ours, theirs *os.File, err error) {
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(pair[0]), name), os.NewFile(uintptr(pair[1]), name+"-child"), nil
}

// process is a non-child process watched through a pidfd, immune to pid
// reuse.
type process struct{ fd int }

func openProcess(pid int) (*process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return nil, os.ErrProcessDone
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	return &process{fd: fd}, nil
}

// Wait blocks until the process has exited.
func (p *process) Wait() {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if n > 0 || (err != nil && err != unix.EINTR) {
			return
		}
	}
}

func (p *process) Kill() { unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0) }

// Terminate asks the process to drain and exit (SIGTERM).
func (p *process) Terminate() { unix.PidfdSendSignal(p.fd, unix.SIGTERM, nil, 0) }

func (p *process) Close() { unix.Close(p.fd) }

// checkExecutable reports, before anything is started, why path cannot be
// run.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return fmt.Errorf("%s: not executable: %w", path, err)
	}
	return nil
}

// spawn starts path with files at descriptors 3 onwards and standard
// input from /dev/null, output to ours. It passes the raw descriptors:
// os/exec would call (*os.File).Fd on each, which switches the shared
// socket to blocking mode under this process's own listeners, whose
// Accept would then block in the kernel and hold up their Close.
func spawn(path string, argv, env []string, files []*os.File) (int, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	all := append([]*os.File{devnull, os.Stdout, os.Stderr}, files...)
	fds := make([]uintptr, len(all))
	for i, f := range all {
		sc, err := f.SyscallConn()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", f.Name(), err)
		}
		if err := sc.Control(func(fd uintptr) { fds[i] = fd }); err != nil {
			return 0, fmt.Errorf("%s: %w", f.Name(), err)
		}
	}
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: env, Files: fds})
	// Keep the files open until the child has its copies.
	runtime.KeepAlive(all)
	return pid, err
}

// reap waits for a child started by spawn.
func reap(pid int) error {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if ws.ExitStatus() != 0 {
			return fmt.Errorf("%s exited with status %d", "sh", ws.ExitStatus())
		}
		return nil
	}
}

func setNonblock(fd int) { syscall.SetNonblock(fd, true) }

// rightsSpace is the size of a control message buffer that holds n
// descriptors.
func rightsSpace(n int) int { return unix.CmsgSpace(4 * n) }

// readMsg reads from c into b, with the descriptors passed alongside
// (SCM_RIGHTS) into oob. It returns the descriptors it received, whether
// the kernel had more for oob than it holds (it closes those), and the
// read error. ReadMsgUnix receives them close-on-exec
// (MSG_CMSG_CLOEXEC).
func readMsg(c *net.UnixConn, b, oob []byte) (n int, fds []int, truncated bool, err error) {
	n, oobn, flags, _, err := c.ReadMsgUnix(b, oob)
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr == nil {
			for i := range msgs {
				if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
					continue
				}
				got, rerr := unix.ParseUnixRights(&msgs[i])
				if rerr == nil {
					fds = append(fds, got...)
				}
			}
		}
	}
	if n < 0 { // an error: nothing read
		n = 0
	}
	if n == 0 && oobn == 0 && err == nil && len(b) > 0 {
		// A stream socket reads nothing only at its end; ReadMsgUnix does
		// not say io.EOF as Read does.
		err = io.EOF
	}
	return n, fds, flags&unix.MSG_CTRUNC != 0, err
}

// writeMsg writes b to c, with fds passed alongside the first byte
// (SCM_RIGHTS, one message).
func writeMsg(c *net.UnixConn, b []byte, fds []int) error {
	if len(fds) == 0 {
		_, err := c.Write(b)
		return err
	}
	n, _, err := c.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	if err == nil && n < len(b) {
		// A stream socket may take part of it; the descriptors went with
		// that part.
		_, err = c.Write(b[n:])
	}
	return err
}

// closeFDs closes raw descriptors received from a peer.
func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// dupSocket returns a close-on-exec duplicate of c's descriptor, taken
// under c's lock, after checking that it is a socket.
func dupSocket(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	err = rc.Control(func(raw uintptr) {
		if _, derr = unix.GetsockoptInt(int(raw), unix.SOL_SOCKET, unix.SO_TYPE); derr != nil {
			derr = fmt.Errorf("not a socket: %w", derr)
			return
		}
		fd, derr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return -1, err
	}
	return fd, derr
}

// recvNow reads what is already queued on c into b, without waiting: 0
// and no error when nothing is.
func recvNow(c *net.UnixConn, b []byte) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	var rerr error
	err = rc.Control(func(fd uintptr) {
		for {
			n, _, rerr = unix.Recvfrom(int(fd), b, unix.MSG_DONTWAIT)
			if rerr != unix.EINTR {
				return
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == unix.EAGAIN:
		return 0, nil
	case rerr != nil:
		return 0, rerr
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}
