//go:build !linux

package upgrade

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

func peerCredUID(fd int) (int, error) {
	return 0, fmt.Errorf("upgrade: peer credentials: %w", errors.ErrUnsupported)
}

func markCloseOnExec(fd int) {}

func listenUnixPrivate(path string) (*net.UnixListener, error) {
	return nil, fmt.Errorf("upgrade: control socket: %w", errors.ErrUnsupported)
}

func socketpair(name string) (ours, theirs *os.File, err error) {
	return nil, nil, fmt.Errorf("upgrade: %w", errors.ErrUnsupported)
}

type process struct{}

func openProcess(pid int) (*process, error) {
	return nil, fmt.Errorf("upgrade: %w", errors.ErrUnsupported)
}

func (p *process) Wait()      {}
func (p *process) Kill()      {}
func (p *process) Terminate() {}
func (p *process) Close()     {}

func checkExecutable(path string) error {
	return fmt.Errorf("upgrade: %w", errors.ErrUnsupported)
}

func spawn(path string, argv, env []string, files []*os.File) (int, error) {
	return 0, fmt.Errorf("upgrade: %w", errors.ErrUnsupported)
}

func reap(pid int) error { return nil }

func setNonblock(fd int) {}

func rightsSpace(n int) int { return 0 }

func readMsg(c *net.UnixConn, b, oob []byte) (n int, fds []int, truncated bool, err error) {
	n, err = c.Read(b)
	return n, nil, false, err
}

func writeMsg(c *net.UnixConn, b []byte, fds []int) error {
	if len(fds) > 0 {
		return fmt.Errorf("upgrade: passing files: %w", errors.ErrUnsupported)
	}
	_, err := c.Write(b)
	return err
}

func closeFDs(fds []int) {}

func dupSocket(c syscall.Conn) (int, error) {
	return -1, fmt.Errorf("upgrade: passing connections: %w", errors.ErrUnsupported)
}

func recvNow(c *net.UnixConn, b []byte) (int, error) {
	return 0, fmt.Errorf("upgrade: %w", errors.ErrUnsupported)
}
