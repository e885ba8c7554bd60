//go:build !unix

package systemd

import (
	"errors"
	"fmt"
	"os"
)

func fileID(f *os.File) (dev, ino uint64, err error) {
	return 0, 0, fmt.Errorf("systemd: journal stream: %w", errors.ErrUnsupported)
}
