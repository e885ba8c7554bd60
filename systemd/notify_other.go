//go:build !linux

package systemd

import (
	"context"
	"errors"
	"fmt"
)

func send(addr string, msg []byte, fds []int) error {
	return fmt.Errorf("unix datagram sockets: %w", errors.ErrUnsupported)
}

func barrier(ctx context.Context, addr string) error {
	return fmt.Errorf("unix datagram sockets: %w", errors.ErrUnsupported)
}
