//go:build unix

package activation

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Where FuzzListenInherited offers descriptors, far from the test
// process's own: four listening unix sockets, a connected socket and a
// regular file.
const (
	fuzzFirstFD  = 900
	fuzzListenNs = 4
	fuzzLastFD   = fuzzFirstFD + fuzzListenNs + 1
)

// FuzzListenInherited runs Listen on real descriptors with any hand-over
// environment and Specs: it takes descriptors only from the range the
// environment names, either all of them or none, and on success every
// descriptor is a listener of the name it was passed under, as the Specs
// ask.
func FuzzListenInherited(f *testing.F) {
	for _, s := range []struct {
		start, n, names, specs string
		multiple               uint8
	}{
		{"900", "1", "http", "http", 0},
		{"900", "2", "http:admin", "http:admin", 0},
		{"900", "2", "http:http", "http", 0},
		{"900", "2", "http:http", "http", 1},
		{"900", "4", "a:b:c:d", "a:b:c", 0},
		{"900", "5", "a:b:c:d:e", "a:b:c:d:e", 0},
		{"903", "3", "a:b:c", "a:b:c", 0},
		{"901", "1", "http", "admin", 0},
		{"900", "1", "http", "", 0},
		{"900", "1", "", "http", 0},
		{"900", "1", "http", "http:http", 0},
		{"900", "1", "a:b", "a", 0},
		{"899", "1", "a", "a", 0},
		{"+900", "01", "http", "http", 0},
	} {
		f.Add(s.start, s.n, s.names, s.specs, s.multiple)
	}
	dir := f.TempDir()
	self := strconv.Itoa(os.Getpid())
	f.Fuzz(func(t *testing.T, start, n, names, specNames string, multiple uint8) {
		env := map[string]string{envInhPID: self, envInhFDStart: start, envInhFDs: n, envInhNames: names}
		lookup := func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		}
		p, claimed, perr := parseEnv(lookup, os.Getpid(), os.Getppid())
		r := p.fds()
		if len(claimed) == 1 {
			r = claimed[0]
		}
		if r.n > 0 && (r.first < fuzzFirstFD || r.first+r.n-1 > fuzzLastFD) {
			t.Skip("names descriptors this test does not own")
		}
		var specs []Spec
		if specNames != "" {
			for i, name := range strings.Split(specNames, ":") {
				specs = append(specs, Spec{Name: name, Multiple: multiple&(1<<(i%8)) != 0})
			}
		}
		offerFDs(t, dir)
		defer func() {
			for fd := fuzzFirstFD; fd <= fuzzLastFD; fd++ {
				unix.Close(fd)
			}
		}()
		for _, k := range envVars {
			os.Unsetenv(k)
		}
		for k, v := range env {
			if strings.IndexByte(v, 0) >= 0 {
				t.Skip("the environment cannot hold NUL")
			}
			os.Setenv(k, v)
		}

		set, err := Listen(context.Background(), specs...)
		for _, k := range envVars {
			os.Unsetenv(k)
		}
		open := func(fd int) bool {
			_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			return err == nil
		}
		inRange := func(fd int) bool { return r.n > 0 && fd >= r.first && fd < r.first+r.n }
		for fd := fuzzFirstFD; fd <= fuzzLastFD; fd++ {
			if !inRange(fd) && !open(fd) {
				t.Fatalf("Listen(%q, %+v) closed fd %d, outside the range %v the environment names", env, specs, fd, r)
			}
		}
		if err != nil {
			if set != nil {
				t.Errorf("Listen(%q, %+v) = %v and error %v", env, specs, set, err)
			}
			matched := false
			for _, s := range []error{ErrUnexpectedName, ErrMissing, ErrNotStream, ErrDuplicateName, ErrBadEnvironment, ErrBadSpec} {
				matched = matched || errors.Is(err, s)
			}
			if !matched || !strings.HasPrefix(err.Error(), "activation: ") {
				t.Errorf("Listen(%q, %+v) error = %v, want one of the package's", env, specs, err)
			}
			if r.n > 0 {
				nOpen := 0
				for fd := r.first; fd < r.first+r.n; fd++ {
					if open(fd) {
						nOpen++
					}
				}
				if nOpen != 0 && nOpen != r.n {
					t.Errorf("Listen(%q, %+v) failed leaving %d of the %d descriptors %v open, want all or none", env, specs, nOpen, r.n, r)
				}
			}
			return
		}
		defer set.Close()
		if perr != nil || set.Source() != Inherited {
			t.Fatalf("Listen(%q, %+v) = %v from %v, want an error (parseEnv: %v)", env, specs, set, set.Source(), perr)
		}
		// Every descriptor is a listener under its own name, in order.
		files := set.Files()
		if len(files) != r.n {
			t.Fatalf("Listen(%q, %+v) holds %d files, want %d", env, specs, len(files), r.n)
		}
		count := map[string]int{}
		for i, f := range files {
			if f.Name != p.names[i] {
				t.Errorf("Listen(%q, %+v) file %d is %q, want %q", env, specs, i, f.Name, p.names[i])
			}
			if r.first+i >= fuzzFirstFD+fuzzListenNs {
				t.Errorf("Listen(%q, %+v) took fd %d, which is not a listening socket", env, specs, r.first+i)
			}
			count[f.Name]++
		}
		for _, sp := range specs {
			ls := set.Listeners(sp.Name)
			if len(ls) != count[sp.Name] || len(ls) == 0 || len(ls) > 1 && !sp.Multiple {
				t.Errorf("Listen(%q, %+v) has %d listeners for %q, want %d", env, specs, len(ls), sp.Name, count[sp.Name])
			}
			delete(count, sp.Name)
		}
		if len(count) > 0 {
			t.Errorf("Listen(%q, %+v) took descriptors under names no Spec asks for: %v", env, specs, count)
		}
	})
}

// offerFDs puts fresh listening unix sockets at fuzzFirstFD on, then a
// connected socket, then a regular file.
func offerFDs(t *testing.T, dir string) {
	t.Helper()
	put := func(f *os.File, fd int) {
		if err := unix.Dup3(int(f.Fd()), fd, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for i := 0; i < fuzzListenNs; i++ {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, strconv.Itoa(i)), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.File()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		put(f, fuzzFirstFD+i)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(pair[1])
	put(os.NewFile(uintptr(pair[0]), "conn"), fuzzFirstFD+fuzzListenNs)
	file, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	put(file, fuzzLastFD)
}
