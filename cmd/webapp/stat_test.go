package main

import (
	"os"
	"strconv"
	"syscall"
)

func fileStat(f *os.File) (dev, ino string, err error) {
	fi, err := f.Stat()
	if err != nil {
		return "", "", err
	}
	st := fi.Sys().(*syscall.Stat_t)
	return strconv.FormatUint(st.Dev, 10), strconv.FormatUint(st.Ino, 10), nil
}
