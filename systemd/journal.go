package systemd

import (
	"fmt"
	"os"
	"strings"
)

// JournalStream reports whether f (normally os.Stderr) is the stream
// systemd connected to the journal: JOURNAL_STREAM holds "device:inode" of
// that stream, and f must be the same file (a child whose output was
// redirected inherits the variable but not the stream).
func JournalStream(f *os.File) bool {
	want := os.Getenv("JOURNAL_STREAM")
	if want == "" || f == nil {
		return false
	}
	dev, ino, err := fileID(f)
	if err != nil {
		return false
	}
	return strings.TrimSpace(want) == fmt.Sprintf("%d:%d", dev, ino)
}
