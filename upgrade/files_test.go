package upgrade_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/upgrade"
)

// serveControl serves u's control socket in a fresh directory until the
// test ends, and returns its path.
func serveControl(t *testing.T, u *upgrade.Upgrader) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := upgrade.ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.ServeControl(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return path
}

// writeFiles writes each of contents to its own file in a fresh
// directory, and opens them under the given names.
func writeFiles(t *testing.T, contents map[string]string, names ...string) []upgrade.File {
	t.Helper()
	dir := t.TempDir()
	var files []upgrade.File
	for _, name := range names {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(contents[name]), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, upgrade.File{Name: name, File: f})
	}
	return files
}

// copies counts the descriptors of this process open on path.
func copies(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// waitOwnCopies waits, at most 5 seconds, until this process holds only
// its own descriptor of each file: the serving side has closed its
// copies.
func waitOwnCopies(t *testing.T, files []upgrade.File) {
	t.Helper()
	for _, f := range files {
		deadline := time.Now().Add(5 * time.Second)
		for copies(t, f.File.Name()) != 1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := copies(t, f.File.Name()); n != 1 {
			t.Errorf("%d descriptors open on %s after the request, want only the caller's", n, f.File.Name())
		}
	}
}

// A reload request carries two files; the new generation it starts reads
// them under their names, and the old one keeps no copy.
func TestRequestPassesFiles(t *testing.T) {
	s := newSetup(t)
	u := s.upgrader(t, "good", 10*time.Second)
	path := serveControl(t, u)
	contents := map[string]string{
		"tls.crt": "-----BEGIN CERTIFICATE-----\nrotated\n-----END CERTIFICATE-----\n",
		"tls.key": "-----BEGIN PRIVATE KEY-----\nrotated\n-----END PRIVATE KEY-----\n",
	}
	files := writeFiles(t, contents, "tls.crt", "tls.key")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := upgrade.Request(ctx, path, files...)
	if err != nil {
		t.Fatalf("Request(%s, tls.crt, tls.key) = %v", path, err)
	}
	killAtEnd(t, res.PID)

	r := s.report(t, res.PID)
	if len(r.Files) != 2 {
		t.Fatalf("new generation got files %+v, want tls.crt and tls.key", r.Files)
	}
	for i, name := range []string{"tls.crt", "tls.key"} {
		got := r.Files[i]
		if got.Name != name || got.Content != contents[name] {
			t.Errorf("new generation's file %d = %q with %q, want %q with %q", i, got.Name, got.Content, name, contents[name])
		}
		if !got.CloseOnExec {
			t.Errorf("new generation's file %s is not close-on-exec: it would leak into its children", name)
		}
	}
	if !r.Same {
		t.Error("a second Inherited() in the new generation returned another Handoff, want the first one's")
	}
	if len(r.Env) != 0 {
		t.Errorf("hand-over variables %v still set after Inherited, want them unset", r.Env)
	}
	waitOwnCopies(t, files)
}

// Files that cannot be passed are refused by Request before it sends
// anything.
func TestRequestRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	reg := open("regular")
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	closed := open("closed")
	closed.Close()
	var many []upgrade.File
	for i := range 17 {
		many = append(many, upgrade.File{Name: fmt.Sprintf("f%d", i), File: reg})
	}
	tests := []struct {
		name  string
		files []upgrade.File
		want  string
	}{
		{"17 files", many, "17 files: at most 16"},
		{"empty name", []upgrade.File{{Name: "", File: reg}}, `file name "": want 1 to 255 characters`},
		{"name too long", []upgrade.File{{Name: strings.Repeat("n", 256), File: reg}}, "want 1 to 255 characters"},
		{"colon", []upgrade.File{{Name: "tls:crt", File: reg}}, `file name "tls:crt": want printable ASCII without ':' or space`},
		{"space", []upgrade.File{{Name: "tls crt", File: reg}}, "without ':' or space"},
		{"not ASCII", []upgrade.File{{Name: "clé", File: reg}}, "want printable ASCII"},
		{"control character", []upgrade.File{{Name: "tls\tcrt", File: reg}}, "want printable ASCII"},
		{"twice", []upgrade.File{{Name: "tls.crt", File: reg}, {Name: "tls.crt", File: reg}}, `file name "tls.crt": given twice`},
		{"directory", []upgrade.File{{Name: "certs", File: d}}, "not a regular file (a directory)"},
		{"no file", []upgrade.File{{Name: "tls.crt"}}, `file "tls.crt": no file`},
		{"closed file", []upgrade.File{{Name: "tls.crt", File: closed}}, "file already closed"},
	}
	// Whatever connects is counted: nothing may.
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := upgrade.Request(ctx, path, tt.files...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "upgrade: cannot pass") {
				t.Errorf("Request(%s) = %v, want an error saying %q", tt.name, err, tt.want)
			}
		})
	}
	// A connection made by Request is accepted before Request returns: it
	// waits for an answer, and gets one only once it is accepted.
	if n := conns.Load(); n != 0 {
		t.Errorf("Request with bad files connected %d times, want never", n)
	}
}

// rawRequest sends req with the descriptors of files in one message to
// the control socket at path, shuts the write side, and returns the
// answer.
func rawRequest(t *testing.T, path string, req string, files ...*os.File) string {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var fds []int
	for _, f := range files {
		fds = append(fds, int(f.Fd()))
	}
	if _, _, err := c.WriteMsgUnix([]byte(req), syscall.UnixRights(fds...), nil); err != nil {
		t.Fatalf("sending %q: %v", req, err)
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("answer to %q: %v", req, err)
	}
	return line
}

// The serving side refuses a request whose descriptors do not match its
// names, one by one regular files, and closes every descriptor it got.
func TestControlRefusesBadFiles(t *testing.T) {
	s := newSetup(t)
	u := s.upgrader(t, "good", 10*time.Second)
	path := serveControl(t, u)
	dir := t.TempDir()
	var regs []*os.File
	for i := range 17 {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		regs = append(regs, f)
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	names16 := "a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p"

	tests := []struct {
		name  string
		req   string
		files []*os.File
		want  string
	}{
		{"names without descriptors", "reload tls.crt:tls.key\n", nil, "error bad request: it names 2 files but carries no descriptors\n"},
		{"descriptors without names", "reload\n", regs[:2], "error bad request: it names no files but carries 2 descriptors\n"},
		{"fewer descriptors than names", "reload tls.crt:tls.key\n", regs[:1], "error bad request: it names 2 files but carries 1 descriptor\n"},
		{"more descriptors than names", "reload tls.crt\n", regs[:3], "error bad request: it names 1 file but carries 3 descriptors\n"},
		{"a directory", "reload tls.crt:certs\n", []*os.File{regs[0], d}, "error bad request: file certs: not a regular file (a directory)\n"},
		{"a pipe", "reload tls.crt\n", []*os.File{pr}, "error bad request: file tls.crt: not a regular file (a pipe)\n"},
		{"17 descriptors", "reload " + names16 + "\n", regs, "error bad request: more than 16 descriptors\n"},
		{"17 names", "reload " + names16 + ":q\n", regs[:16], "error bad request: 17 files: at most 16\n"},
		{"a name twice", "reload a:a\n", regs[:2], "error bad request: file name \"a\": given twice\n"},
		{"pid with a descriptor", "pid\n", regs[:1], "error bad request: it names no files but carries 1 descriptor\n"},
		{"unknown verb", "restart tls.crt\n", regs[:1], "error unknown request \"restart tls.crt\": want reload, pid or status\n"},
		{"no newline", "reload tls.crt", regs[:1], "error bad request: 14 bytes without a newline\n"},
	}
	// The poller and the like, once.
	if pid, err := upgrade.MainPID(context.Background(), path); err != nil || pid != os.Getpid() {
		t.Fatalf("MainPID() = %d, %v; want this process", pid, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Which descriptors, not how many: one that some other part
			// of the process closes meanwhile must not hide a leak, nor
			// look like one.
			before := fdSnapshot(t)
			if got := rawRequest(t, path, tt.req, tt.files...); got != tt.want {
				t.Errorf("answer to %q with %d descriptors = %q, want %q", tt.req, len(tt.files), got, tt.want)
			}
			if extra := waitNoNewFDs(t, before); len(extra) != 0 {
				t.Errorf("open after the request and not before: %v: the serving side leaks what it got", extra)
			}
		})
	}
	if n := len(s.children(t)); n != 0 {
		t.Errorf("%d new generations started for refused requests, want none", n)
	}
	// A well-formed request still works.
	files := writeFiles(t, map[string]string{"tls.crt": "crt"}, "tls.crt")
	res, err := upgrade.Request(context.Background(), path, files...)
	if err != nil {
		t.Fatalf("Request(tls.crt) after the refused ones = %v", err)
	}
	killAtEnd(t, res.PID)
	if r := s.report(t, res.PID); len(r.Files) != 1 || r.Files[0].Content != "crt" {
		t.Errorf("new generation got %+v, want tls.crt", r.Files)
	}
}

// A request with files that arrives while an upgrade is under way is
// refused with ErrBusy: the new generation under way would not get its
// files. The upgrade under way goes on.
func TestRequestWithFilesDuringUpgrade(t *testing.T) {
	s := newSetup(t)
	files := writeFiles(t, map[string]string{"tls.crt": "crt", "tls.key": "key"}, "tls.crt", "tls.key")
	var path string
	var reqErr error
	asked := false
	u := s.upgraderWith(t, "good", 10*time.Second, func(o *upgrade.Options) {
		o.OnStep = func(st upgrade.Step) {
			if st != upgrade.StepStarted || asked {
				return
			}
			// The upgrade is under way until this returns.
			asked = true
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, reqErr = upgrade.Request(ctx, path, files...)
		}
	})
	path = serveControl(t, u)
	res, err := u.Upgrade(context.Background())
	if err != nil {
		t.Fatalf("Upgrade() = %v", err)
	}
	killAtEnd(t, res.PID)
	if !errors.Is(reqErr, upgrade.ErrBusy) || !strings.Contains(reqErr.Error(), "tls.crt, tls.key") {
		t.Errorf("Request(tls.crt, tls.key) during an upgrade = %v, want ErrBusy naming the files", reqErr)
	}
	if r := s.report(t, res.PID); len(r.Files) != 0 {
		t.Errorf("the upgrade under way passed %+v, want no files", r.Files)
	}
	waitOwnCopies(t, files)
}

func TestHandoffFilesNil(t *testing.T) {
	var h *upgrade.Handoff
	if files := h.Files(); files != nil {
		t.Errorf("(*Handoff)(nil).Files() = %v, want nil", files)
	}
}
