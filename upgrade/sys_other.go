//go:build !linux

package upgrade

import (
	"errors"
	"fmt"
	"net"
	"os"
)

func peerCredUID(fd int) (int, error) {
	return 0, fmt.Errorf("upgrade: peer credentials: %w", errors.ErrUnsupported)
}

func markCloseOnExec(fd int) {}

func listenUnixPrivate(path string) (*net.UnixListener, error) {
	return nil, fmt.Errorf("upgrade: control socket: %w", errors.ErrUnsupported)
}

func socketpair() (ours, theirs *os.File, err error) {
	return nil, nil, fmt.Errorf("upgrade: %w", errors.ErrUnsupported)
}
