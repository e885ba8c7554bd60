package systemdtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatal and Skip record the message and end
// the goroutine, so that failure paths can be checked.
type recorder struct {
	testing.TB
	fatal, skip string
	logs        string
}

func (r *recorder) Logf(format string, args ...any) {
	r.logs += fmt.Sprintf(format, args...) + "\n"
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// record runs f with a recorder in a goroutine of its own.
func record(t *testing.T, f func(testing.TB)) *recorder {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

// fatalOf returns the message f passed to Fatalf; it fails t if f did not.
func fatalOf(t *testing.T, f func(testing.TB)) string {
	t.Helper()
	r := record(t, f)
	if r.fatal == "" {
		t.Errorf("no Fatalf (skip %q)", r.skip)
	}
	return r.fatal
}

// journalWith returns b.Journal(t, args...) once it contains want,
// polling every 100 ms for at most 10 s (a line reaches the journal some
// time after its process wrote it); after that, the journal as it is.
func journalWith(t *testing.T, b *Box, want string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		j := b.Journal(t, args...)
		if strings.Contains(j, want) || time.Now().After(deadline) {
			return j
		}
		time.Sleep(100 * time.Millisecond)
	}
}
