//go:build unix

package systemd

import (
	"fmt"
	"os"
	"syscall"
)

func fileID(f *os.File) (dev, ino uint64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("systemd: no stat for %s", f.Name())
	}
	return uint64(st.Dev), uint64(st.Ino), nil
}
