package main

import (
	"os"
	"strconv"
	"syscall"
	"testing"
)

// journalStderr is a file to pass as a child's stderr, and the
// JOURNAL_STREAM entry that names it, as systemd sets it.
func journalStderr(t *testing.T) (*os.File, string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	dev, ino, err := fileStat(f)
	if err != nil {
		t.Fatal(err)
	}
	return f, "JOURNAL_STREAM=" + dev + ":" + ino
}

func fileStat(f *os.File) (dev, ino string, err error) {
	fi, err := f.Stat()
	if err != nil {
		return "", "", err
	}
	st := fi.Sys().(*syscall.Stat_t)
	return strconv.FormatUint(st.Dev, 10), strconv.FormatUint(st.Ino, 10), nil
}
