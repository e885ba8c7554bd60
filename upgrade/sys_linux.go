//go:build linux

package upgrade

import (
	"net"
	"os"
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

// socketpair returns the two ends of a close-on-exec unix stream pair.
func socketpair() (ours, theirs *os.File, err error) {
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(pair[0]), "upgrade-handshake"), os.NewFile(uintptr(pair[1]), "upgrade-handshake-child"), nil
}
