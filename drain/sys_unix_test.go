//go:build unix

package drain

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestTemporary(t *testing.T) {
	op := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	tests := []struct {
		err  error
		want bool
	}{
		{op(syscall.EMFILE), true},
		{op(syscall.ENFILE), true},
		{op(syscall.ENOBUFS), true},
		{op(syscall.ENOMEM), true},
		{op(syscall.ECONNABORTED), true},
		{op(syscall.EINVAL), false},
		{op(syscall.EBADF), false},
		{net.ErrClosed, false},
		{errors.New("accept: something else"), false},
	}
	for _, tt := range tests {
		if got := temporary(tt.err); got != tt.want {
			t.Errorf("temporary(%v) = %t, want %t", tt.err, got, tt.want)
		}
	}
}
