//go:build !linux

package systemd

import (
	"context"
	"errors"
	"fmt"
)

type sender struct{}

func (s *sender) send(addr string, msg []byte, fds []int) error {
	return fmt.Errorf("unix datagram sockets: %w", errors.ErrUnsupported)
}

func barrier(ctx context.Context, s *sender, addr string) error {
	return fmt.Errorf("unix datagram sockets: %w", errors.ErrUnsupported)
}
