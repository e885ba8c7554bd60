//go:build unix

package drain

import (
	"errors"
	"syscall"
)

// temporary reports whether an accept error is one that passes: the
// process or the system is out of descriptors, buffers or memory for the
// moment, or the client gave up before it was accepted.
func temporary(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED:
		return true
	}
	return false
}
