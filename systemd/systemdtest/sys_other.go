//go:build !linux

package systemdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

var (
	errUnsupported = fmt.Errorf("systemdtest: %w: a systemd sandbox needs Linux", errors.ErrUnsupported)
	errLocked      = errors.New("locked by another process")
)

func bootSysProcAttr() *syscall.SysProcAttr { return nil }

func signalProc(proc, syscall.Signal) error { return errUnsupported }

func lockDir(string, bool) (*os.File, error) { return nil, errUnsupported }

// lockPort claims nothing: ports are only checked by binding them.
func lockPort(int) (io.Closer, error) { return nil, nil }

func dialInNetns(context.Context, *os.File, *net.Dialer, string, string) (net.Conn, error) {
	return nil, errUnsupported
}
