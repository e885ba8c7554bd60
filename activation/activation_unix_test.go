//go:build unix

package activation

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the service under test: with childModeEnv set,
// TestMain runs child instead of the tests.
const (
	childModeEnv  = "ACTIVATION_TEST_CHILD" // report, serve or handon
	childSpecsEnv = "ACTIVATION_TEST_SPECS" // the Specs, as JSON
	childNFDsEnv  = "ACTIVATION_TEST_NFDS"  // how many fds from 3 on to report on
	// childPIDEnv becomes LISTEN_PID in the child: "self" for its own pid
	// (unknown before it is started), anything else as is.
	childPIDEnv = "ACTIVATION_TEST_LISTEN_PID"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childModeEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// report is what a child tells its parent, as one JSON line on stdout.
type report struct {
	Source      string
	Names       []string
	Addrs       map[string][]string // name: listener addresses
	ListenerErr map[string]string   // name: Set.Listener's error
	Files       []string            // Set.Files names
	Err         string
	Is          []string            // the sentinels errors.Is finds in Err
	FDErrs      []fdError           // every *FDError in Err
	FDs         []fdState           // fds 3.. as they were right after Listen
	Env         []string            // LISTEN_* and BATON_LISTEN_* left after Listen
	Conns       map[string][]string // name: TakeConns's remote addresses
	ConnNames   []string
	Dropped     []fdError
	DroppedMsg  []string
}

type fdError struct {
	FD   int
	Name string
}

type fdState struct {
	FD      int
	Open    bool
	Cloexec bool
}

var sentinels = map[string]error{
	"ErrUnexpectedName": ErrUnexpectedName,
	"ErrMissing":        ErrMissing,
	"ErrNotStream":      ErrNotStream,
	"ErrNotDatagram":    ErrNotDatagram,
	"ErrDuplicateName":  ErrDuplicateName,
	"ErrBadEnvironment": ErrBadEnvironment,
	"ErrBadSpec":        ErrBadSpec,
}

func child(mode string) int {
	if v, ok := os.LookupEnv(childPIDEnv); ok {
		if v == "self" {
			v = strconv.Itoa(os.Getpid())
		}
		os.Setenv("LISTEN_PID", v)
	}
	nfds, _ := strconv.Atoi(os.Getenv(childNFDsEnv))
	var specs []Spec
	if err := json.Unmarshal([]byte(os.Getenv(childSpecsEnv)), &specs); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	for _, v := range []string{childModeEnv, childPIDEnv, childNFDsEnv, childSpecsEnv} {
		os.Unsetenv(v)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	set, err := Listen(ctx, specs...)

	var r report
	for fd := 3; fd < 3+nfds; fd++ {
		flags, ferr := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		r.FDs = append(r.FDs, fdState{FD: fd, Open: ferr == nil, Cloexec: ferr == nil && flags&unix.FD_CLOEXEC != 0})
	}
	for _, v := range envVars {
		if val, ok := os.LookupEnv(v); ok {
			r.Env = append(r.Env, v+"="+val)
		}
	}
	if err != nil {
		r.Err = err.Error()
		for name, s := range sentinels {
			if errors.Is(err, s) {
				r.Is = append(r.Is, name)
			}
		}
		slices.Sort(r.Is)
		r.FDErrs = fdErrors(err)
	} else {
		r.Source = set.Source().String()
		r.Names = set.Names()
		r.Addrs = make(map[string][]string)
		r.ListenerErr = make(map[string]string)
		for _, name := range r.Names {
			for _, l := range set.Listeners(name) {
				r.Addrs[name] = append(r.Addrs[name], l.Addr().String())
			}
			for _, pc := range set.PacketConns(name) {
				r.Addrs[name] = append(r.Addrs[name], pc.LocalAddr().String())
			}
			if set.PacketConns(name) != nil {
				if _, err := set.PacketConn(name); err != nil {
					r.ListenerErr[name] = err.Error()
				}
			} else if _, err := set.Listener(name); err != nil {
				r.ListenerErr[name] = err.Error()
			}
		}
		for _, f := range set.Files() {
			r.Files = append(r.Files, f.Name)
		}
		r.ConnNames = set.ConnNames()
		for _, e := range set.Dropped() {
			r.Dropped = append(r.Dropped, fdErrors(e)...)
			r.DroppedMsg = append(r.DroppedMsg, e.Error())
		}
	}
	if mode != "conns" || err != nil {
		b, _ := json.Marshal(r)
		fmt.Printf("%s\n", b)
	}
	if err != nil {
		return 0
	}
	defer set.Close()

	switch mode {
	case "conns":
		// Report the stored connections, then write our pid on each and
		// close it: the parent reads it on its own end.
		r.Conns = map[string][]string{}
		var all []net.Conn
		for _, name := range set.Names() {
			for _, c := range set.TakeConns(name) {
				r.Conns[name] = append(r.Conns[name], c.RemoteAddr().String())
				all = append(all, c)
			}
			if again := set.TakeConns(name); len(again) != 0 {
				r.Conns[name] = append(r.Conns[name], "taken twice")
			}
		}
		b, _ := json.Marshal(r)
		fmt.Printf("%s\n", b)
		for _, c := range all {
			fmt.Fprintf(c, "pid %d\n", os.Getpid())
			c.Close()
		}
	case "serve":
		// Answer one connection on every listener with its name and the
		// Set's source.
		for _, name := range set.Names() {
			for _, l := range set.Listeners(name) {
				l.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(20 * time.Second))
				c, err := l.Accept()
				if err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					return 1
				}
				fmt.Fprintf(c, "%s %s\n", name, set.Source())
				c.Close()
			}
		}
	case "handon":
		// Hand the listeners on to a new generation, close ours once it
		// runs, and wait for it.
		files, env := set.Export(3)
		exe, _ := os.Executable()
		cmd := exec.Command(exe)
		b, _ := json.Marshal(specs)
		cmd.Env = append(os.Environ(), append(env, childModeEnv+"=serve", childSpecsEnv+"="+string(b), childNFDsEnv+"="+strconv.Itoa(len(files)))...)
		cmd.ExtraFiles = files
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 1
		}
		set.Close()
		if err := cmd.Wait(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 1
		}
	}
	return 0
}

// fdErrors returns every *FDError in err's tree.
func fdErrors(err error) []fdError {
	var out []fdError
	var walk func(error)
	walk = func(err error) {
		if fe, ok := err.(*FDError); ok {
			out = append(out, fdError{fe.FD, fe.Name})
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// startChild re-executes the test binary in mode with the given extra
// files (fd 3 on) and environment, and returns its first report and a
// reader of the rest of its output.
func startChild(t *testing.T, mode string, specs []Spec, files []*os.File, env ...string) (report, *bufio.Reader, *exec.Cmd) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, exe)
	b, _ := json.Marshal(specs)
	cmd.Env = append(cleanEnv(), childModeEnv+"="+mode, childSpecsEnv+"="+string(b), childNFDsEnv+"="+strconv.Itoa(len(files)))
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	rd := bufio.NewReader(out)
	return readReport(t, rd), rd, cmd
}

func readReport(t *testing.T, rd *bufio.Reader) report {
	t.Helper()
	line, err := rd.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading the child's report: %v (%q)", err, line)
	}
	var r report
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("child report %q: %v", line, err)
	}
	return r
}

// cleanEnv is this process's environment without either protocol's
// variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(envVars[:], k) {
			env = append(env, kv)
		}
	}
	return env
}

// sockDir returns a short directory for unix socket paths (sun_path holds
// 108 bytes, less than t.TempDir may need).
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "act")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// A socket the parent made for a child: the file goes to the child, addr
// is what the child's listener must report.
type sock struct {
	file *os.File
	addr string
}

type fileer interface{ File() (*os.File, error) }

func fileOf(t *testing.T, c fileer, closer interface{ Close() error }, addr string) sock {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); closer.Close() })
	return sock{file: f, addr: addr}
}

func tcpSock(t *testing.T) sock {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return fileOf(t, l.(*net.TCPListener), l, l.Addr().String())
}

func unixSock(t *testing.T) sock {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(sockDir(t), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return fileOf(t, l.(*net.UnixListener), l, l.Addr().String())
}

func udpSock(t *testing.T) sock {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return fileOf(t, c.(*net.UDPConn), c, c.LocalAddr().String())
}

func unixgramSock(t *testing.T) sock {
	t.Helper()
	c, err := net.ListenPacket("unixgram", filepath.Join(sockDir(t), "g.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return fileOf(t, c.(*net.UnixConn), c, c.LocalAddr().String())
}

func seqpacketSock(t *testing.T) sock {
	t.Helper()
	l, err := net.Listen("unixpacket", filepath.Join(sockDir(t), "p.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return fileOf(t, l.(*net.UnixListener), l, l.Addr().String())
}

// connSock is a connected TCP socket: a stream socket that does not listen.
func connSock(t *testing.T) sock {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return fileOf(t, c.(*net.TCPConn), c, c.LocalAddr().String())
}

func regularFile(t *testing.T) sock {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return sock{file: f, addr: f.Name()}
}

// TestListenPassed passes real sockets to a re-executed child with real
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES and checks what its Listen
// makes of them.
func TestListenPassed(t *testing.T) {
	type wantFD struct {
		FD   int
		Name string
	}
	tests := []struct {
		name    string
		socks   []func(*testing.T) sock
		pid     string // ACTIVATION_TEST_LISTEN_PID; "" leaves LISTEN_PID unset
		env     []string
		specs   []Spec
		want    map[string][]int // name: indexes into socks whose addresses it must get
		source  string           // with want
		wantIs  []string         // the sentinels of the error
		wantFDs []wantFD         // the FDErrors, in order
		wantMsg string           // a substring of the error
		// After an error: whether the passed fds must still be open (an
		// environment error takes nothing) or all closed (nothing leaks).
		keepFDs bool
		// The error may hold more than wantIs and wantFDs say (what the
		// child's runtime has open varies).
		partial bool
	}{
		{
			name:  "one name tcp",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env:   []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			specs: []Spec{{Name: "http", Address: "127.0.0.1:1"}},
			want:  map[string][]int{"http": {0}}, source: "systemd",
		},
		{
			name:  "one name unix",
			socks: []func(*testing.T) sock{unixSock}, pid: "self",
			env:   []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=ctl"},
			specs: []Spec{{Name: "ctl", Network: "unix", Address: "/nonexistent/ctl.sock"}},
			want:  map[string][]int{"ctl": {0}}, source: "systemd",
		},
		{
			name:  "two names tcp and unix in the other order",
			socks: []func(*testing.T) sock{unixSock, tcpSock}, pid: "self",
			env:   []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=admin:http"},
			specs: []Spec{{Name: "http"}, {Name: "admin", Network: "unix"}},
			want:  map[string][]int{"http": {1}, "admin": {0}}, source: "systemd",
		},
		{
			name:  "two fds one name with Multiple",
			socks: []func(*testing.T) sock{tcpSock, unixSock, tcpSock}, pid: "self",
			env:   []string{"LISTEN_FDS=3", "LISTEN_FDNAMES=http:admin:http"},
			specs: []Spec{{Name: "http", Multiple: true}, {Name: "admin"}},
			want:  map[string][]int{"http": {0, 2}, "admin": {1}}, source: "systemd",
		},
		{
			name:  "stream and datagram",
			socks: []func(*testing.T) sock{tcpSock, udpSock, unixgramSock}, pid: "self",
			env:   []string{"LISTEN_FDS=3", "LISTEN_FDNAMES=http:udp:log"},
			specs: []Spec{{Name: "http"}, {Name: "udp", Network: "udp"}, {Name: "log", Network: "unixgram"}},
			want:  map[string][]int{"http": {0}, "udp": {1}, "log": {2}}, source: "systemd",
		},
		{
			name:  "optional socket not passed",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env:   []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			specs: []Spec{{Name: "http"}, {Name: "grpc", Optional: true, Address: "127.0.0.1:1"}, {Name: "udp", Network: "udp", Optional: true}},
			want:  map[string][]int{"http": {0}}, source: "systemd",
		},
		{
			name:  "optional socket passed",
			socks: []func(*testing.T) sock{tcpSock, tcpSock}, pid: "self",
			env:   []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=grpc:http"},
			specs: []Spec{{Name: "http"}, {Name: "grpc", Optional: true}},
			want:  map[string][]int{"http": {1}, "grpc": {0}}, source: "systemd",
		},
		{
			name:  "stream fd for a datagram spec",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=udp"},
			specs:  []Spec{{Name: "udp", Network: "udp"}},
			wantIs: []string{"ErrNotDatagram"}, wantFDs: []wantFD{{3, "udp"}},
			wantMsg: `activation: fd 3 "udp": not a datagram socket: socket type is SOCK_STREAM`,
		},
		{
			name:  "optional socket of the wrong kind",
			socks: []func(*testing.T) sock{tcpSock, udpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:grpc"},
			specs:  []Spec{{Name: "http"}, {Name: "grpc", Optional: true}},
			wantIs: []string{"ErrNotStream"}, wantFDs: []wantFD{{4, "grpc"}},
			wantMsg: "SOCK_DGRAM (ListenDatagram=",
		},
		{
			name:  "unexpected name",
			socks: []func(*testing.T) sock{tcpSock, tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrUnexpectedName"}, wantFDs: []wantFD{{4, "admin"}},
			wantMsg: `activation: fd 4 "admin": unexpected name: asked for "http"`,
		},
		{
			name:  "names absent",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=1"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrMissing", "ErrUnexpectedName"}, wantFDs: []wantFD{{3, "unknown"}, {-1, "http"}},
			wantMsg: `LISTEN_FDNAMES is not set`,
		},
		{
			name:  "missing name",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			specs:  []Spec{{Name: "http"}, {Name: "admin", Address: "127.0.0.1:0"}},
			wantIs: []string{"ErrMissing"}, wantFDs: []wantFD{{-1, "admin"}},
			wantMsg: `activation: "admin": missing: not among LISTEN_FDNAMES="http"`,
		},
		{
			name:  "udp fd",
			socks: []func(*testing.T) sock{tcpSock, udpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:dns"},
			specs:  []Spec{{Name: "http"}, {Name: "dns"}},
			wantIs: []string{"ErrNotStream"}, wantFDs: []wantFD{{4, "dns"}},
			wantMsg: `activation: fd 4 "dns": not a listening stream socket: socket type is SOCK_DGRAM`,
		},
		{
			name:  "unixgram fd",
			socks: []func(*testing.T) sock{unixgramSock}, pid: "self",
			env:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=log"},
			specs:  []Spec{{Name: "log"}},
			wantIs: []string{"ErrNotStream"}, wantFDs: []wantFD{{3, "log"}},
			wantMsg: "SOCK_DGRAM",
		},
		{
			name:  "seqpacket fd",
			socks: []func(*testing.T) sock{seqpacketSock}, pid: "self",
			env:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=ctl"},
			specs:  []Spec{{Name: "ctl"}},
			wantIs: []string{"ErrNotStream"}, wantFDs: []wantFD{{3, "ctl"}},
			wantMsg: "SOCK_SEQPACKET",
		},
		{
			name:  "connected stream socket",
			socks: []func(*testing.T) sock{connSock}, pid: "self",
			env:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrNotStream"}, wantFDs: []wantFD{{3, "http"}},
			wantMsg: "not listening",
		},
		{
			name:  "regular file",
			socks: []func(*testing.T) sock{regularFile}, pid: "self",
			env:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrNotStream"}, wantFDs: []wantFD{{3, "http"}}, keepFDs: true,
			wantMsg: `activation: fd 3 "http": not a listening stream socket: not a socket`,
		},
		{
			name:  "two fds one name",
			socks: []func(*testing.T) sock{tcpSock, tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:http"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrDuplicateName"}, wantFDs: []wantFD{{4, "http"}},
			wantMsg: `activation: fd 4 "http": duplicate name: fd 3 has this name too`,
		},
		{
			name:  "everything wrong at once",
			socks: []func(*testing.T) sock{tcpSock, udpSock, tcpSock, tcpSock}, pid: "self",
			env:     []string{"LISTEN_FDS=4", "LISTEN_FDNAMES=other:http:admin:admin"},
			specs:   []Spec{{Name: "http"}, {Name: "admin"}, {Name: "metrics"}},
			wantIs:  []string{"ErrDuplicateName", "ErrMissing", "ErrNotStream", "ErrUnexpectedName"},
			wantFDs: []wantFD{{3, "other"}, {4, "http"}, {6, "admin"}, {-1, "metrics"}},
		},
		{
			name:  "non-numeric LISTEN_FDS",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=one", "LISTEN_FDNAMES=http"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrBadEnvironment"}, keepFDs: true,
			wantMsg: `activation: LISTEN_FDS="one": bad environment: not a number`,
		},
		{
			name:  "negative LISTEN_FDS",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=-1", "LISTEN_FDNAMES=http"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrBadEnvironment"}, keepFDs: true,
			wantMsg: `LISTEN_FDS="-1": bad environment: negative`,
		},
		{
			name:  "names count mismatch",
			socks: []func(*testing.T) sock{tcpSock, tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrBadEnvironment"}, keepFDs: true,
			wantMsg: `LISTEN_FDNAMES="http": bad environment: 1 names for LISTEN_FDS=2`,
		},
		{
			// Past fd 3 the child has the Go runtime's own descriptors,
			// then closed ones: none may be wrapped or closed.
			name:  "more fds claimed than passed",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env:    []string{"LISTEN_FDS=200", "LISTEN_FDNAMES=http" + strings.Repeat(":x", 199)},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrBadEnvironment"}, partial: true, keepFDs: true,
			wantMsg: `bad environment: LISTEN_FDS=200 names fds 3 to 202, but`,
		},
		{
			name:  "LISTEN_PID not ours",
			socks: []func(*testing.T) sock{tcpSock}, pid: "1",
			env:   []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			specs: []Spec{{Name: "http", Address: "127.0.0.1:0"}},
			want:  map[string][]int{"http": nil}, source: "bound",
		},
		{
			name:  "LISTEN_PID absent",
			socks: []func(*testing.T) sock{tcpSock},
			env:   []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			specs: []Spec{{Name: "http", Address: "127.0.0.1:0"}},
			want:  map[string][]int{"http": nil}, source: "bound",
		},
		{
			name:  "systemd and a previous generation at once",
			socks: []func(*testing.T) sock{tcpSock}, pid: "self",
			env: []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http",
				"BATON_LISTEN_PARENT=" + strconv.Itoa(os.Getpid()), "BATON_LISTEN_FDS=1", "BATON_LISTEN_FDNAMES=http"},
			specs:  []Spec{{Name: "http"}},
			wantIs: []string{"ErrBadEnvironment"}, keepFDs: true,
			wantMsg: "BATON_LISTEN_PARENT",
		},
		{
			name:  "a grandchild does not take inherited fds",
			socks: []func(*testing.T) sock{tcpSock},
			env:   []string{"BATON_LISTEN_PARENT=" + strconv.Itoa(os.Getppid()), "BATON_LISTEN_FDS=1", "BATON_LISTEN_FDNAMES=http"},
			specs: []Spec{{Name: "http", Address: "127.0.0.1:0"}},
			want:  map[string][]int{"http": nil}, source: "bound",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var socks []sock
			var files []*os.File
			for _, mk := range tt.socks {
				s := mk(t)
				socks = append(socks, s)
				files = append(files, s.file)
			}
			env := tt.env
			if tt.pid != "" {
				env = append(env, childPIDEnv+"="+tt.pid)
			}
			r, _, _ := startChild(t, "report", tt.specs, files, env...)

			if len(r.Env) > 0 {
				t.Errorf("environment after Listen = %q, want no LISTEN_* or BATON_LISTEN_*", r.Env)
			}
			if tt.want != nil {
				if r.Err != "" {
					t.Fatalf("Listen() error = %s, want none", r.Err)
				}
				if r.Source != tt.source {
					t.Errorf("Source() = %s, want %s", r.Source, tt.source)
				}
				if len(r.Names) != len(tt.want) {
					t.Errorf("Names() = %q, want the %d names of %v", r.Names, len(tt.want), tt.want)
				}
				for name, idx := range tt.want {
					if idx == nil { // bound: one listener of its own
						if len(r.Addrs[name]) != 1 {
							t.Errorf("Listeners(%q) = %q, want one", name, r.Addrs[name])
						}
						continue
					}
					var want []string
					for _, i := range idx {
						want = append(want, socks[i].addr)
					}
					if !reflect.DeepEqual(r.Addrs[name], want) {
						t.Errorf("Listeners(%q) = %q, want %q", name, r.Addrs[name], want)
					}
					if len(idx) > 1 && !strings.Contains(r.ListenerErr[name], "duplicate name") {
						t.Errorf("Listener(%q) error = %q, want ErrDuplicateName", name, r.ListenerErr[name])
					}
					if len(idx) == 1 && r.ListenerErr[name] != "" {
						t.Errorf("Listener(%q) error = %q, want none", name, r.ListenerErr[name])
					}
				}
				if tt.source == "systemd" {
					if len(r.Files) != len(socks) {
						t.Errorf("Files() names = %q, want %d", r.Files, len(socks))
					}
					for _, fd := range r.FDs {
						if !fd.Open || !fd.Cloexec {
							t.Errorf("after Listen fd %d open %v close-on-exec %v, want both", fd.FD, fd.Open, fd.Cloexec)
						}
					}
				} else {
					for _, fd := range r.FDs {
						if !fd.Open || fd.Cloexec {
							t.Errorf("after Listen fd %d open %v close-on-exec %v, want it untouched (open, inheritable)", fd.FD, fd.Open, fd.Cloexec)
						}
					}
				}
				return
			}
			if r.Err == "" {
				t.Fatalf("Listen() = %s %v, want an error", r.Source, r.Addrs)
			}
			if tt.partial {
				for _, is := range tt.wantIs {
					if !slices.Contains(r.Is, is) {
						t.Errorf("Listen() error %q is %q, want it to include %s", r.Err, r.Is, is)
					}
				}
			} else if !reflect.DeepEqual(r.Is, tt.wantIs) {
				t.Errorf("Listen() error %q is %q, want %q", r.Err, r.Is, tt.wantIs)
			}
			var gotFDs []wantFD
			for _, fe := range r.FDErrs {
				gotFDs = append(gotFDs, wantFD(fe))
			}
			if !tt.partial && !reflect.DeepEqual(gotFDs, tt.wantFDs) {
				t.Errorf("Listen() error %q names %v, want %v", r.Err, gotFDs, tt.wantFDs)
			}
			if !strings.Contains(r.Err, tt.wantMsg) {
				t.Errorf("Listen() error = %q, want it to contain %q", r.Err, tt.wantMsg)
			}
			for _, fd := range r.FDs {
				if fd.Open != tt.keepFDs {
					t.Errorf("after Listen() error fd %d open = %v, want %v", fd.FD, fd.Open, tt.keepFDs)
				}
			}
		})
	}
}

// dialName connects to network addr and returns the line the child
// answers with.
func dialName(t *testing.T, network, addr string) string {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

// TestExport binds in this process, hands the listeners on with Export to
// a re-executed child, closes its own Set and checks that the child serves
// on them as Inherited.
func TestExport(t *testing.T) {
	path := filepath.Join(sockDir(t), "admin.sock")
	set, err := Listen(context.Background(),
		Spec{Name: "http", Address: "127.0.0.1:0"},
		Spec{Name: "admin", Network: "unix", Address: path},
	)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if set.Source() != Bound {
		t.Fatalf("Source() = %v, want bound", set.Source())
	}
	hl, _ := set.Listener("http")
	httpAddr := hl.Addr().String()

	// Leave one ExtraFiles slot taken so that the fds do not start at 3.
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	files, env := set.Export(4)
	if len(files) != 2 {
		t.Fatalf("Export(4) = %d files, want 2", len(files))
	}
	files = append([]*os.File{devnull}, files...)
	r, rd, cmd := startChild(t, "serve", []Spec{{Name: "http"}, {Name: "admin"}}, files, env...)
	if r.Err != "" || r.Source != "inherited" {
		t.Fatalf("child Listen() = %s, %s, want inherited", r.Source, r.Err)
	}
	if got := r.Addrs["http"]; len(got) != 1 || got[0] != httpAddr {
		t.Errorf("child Listeners(http) = %q, want [%s]", got, httpAddr)
	}
	if got := r.Addrs["admin"]; len(got) != 1 || got[0] != path {
		t.Errorf("child Listeners(admin) = %q, want [%s]", got, path)
	}
	if len(r.Env) > 0 {
		t.Errorf("child environment after Listen = %q, want none of ours", r.Env)
	}
	for _, fd := range r.FDs[1:] {
		if !fd.Open || !fd.Cloexec {
			t.Errorf("child fd %d open %v close-on-exec %v, want both", fd.FD, fd.Open, fd.Cloexec)
		}
	}

	// The old generation leaves: the socket path must survive its Close.
	if err := set.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("after the handed-on Set's Close: %v, want the socket path kept", err)
	}
	if got := dialName(t, "tcp", httpAddr); got != "http inherited" {
		t.Errorf("child answered %q on http, want %q", got, "http inherited")
	}
	if got := dialName(t, "unix", path); got != "admin inherited" {
		t.Errorf("child answered %q on admin, want %q", got, "admin inherited")
	}
	rd.WriteTo(os.Stderr)
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
}

// TestHandOnChain runs the reload chain: systemd's fds to a first
// generation, Export to a second, which serves once the first has closed
// its Set.
func TestHandOnChain(t *testing.T) {
	s := tcpSock(t)
	u := unixSock(t)
	r, rd, cmd := startChild(t, "handon", []Spec{{Name: "http"}, {Name: "admin"}}, []*os.File{s.file, u.file},
		childPIDEnv+"=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin")
	if r.Err != "" || r.Source != "systemd" {
		t.Fatalf("first generation Listen() = %s, %s, want systemd", r.Source, r.Err)
	}
	r2 := readReport(t, rd)
	if r2.Err != "" || r2.Source != "inherited" {
		t.Fatalf("second generation Listen() = %s, %s, want inherited", r2.Source, r2.Err)
	}
	if len(r2.Env) > 0 {
		t.Errorf("second generation environment after Listen = %q, want none of ours", r2.Env)
	}
	if !reflect.DeepEqual(r2.Addrs, r.Addrs) {
		t.Errorf("second generation listeners = %v, want the first's %v", r2.Addrs, r.Addrs)
	}
	if got := dialName(t, "tcp", s.addr); got != "http inherited" {
		t.Errorf("answer on http = %q, want %q", got, "http inherited")
	}
	if got := dialName(t, "unix", u.addr); got != "admin inherited" {
		t.Errorf("answer on admin = %q, want %q", got, "admin inherited")
	}
	rd.WriteTo(os.Stderr)
	if err := cmd.Wait(); err != nil {
		t.Errorf("first generation: %v", err)
	}
}

// TestBind covers the fallback in this process: nothing is passed to it.
func TestBind(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, path string) // prepares the unix path
		specs   func(path string) []Spec
		ctx     func() context.Context
		wantErr error // errors.Is; nil for success
		kept    bool  // with an error: whatever was at the path is still there
	}{
		{
			name: "tcp and unix",
			specs: func(p string) []Spec {
				return []Spec{{Name: "http", Address: "127.0.0.1:0"}, {Name: "ctl", Network: "unix", Address: p}}
			},
		},
		{
			name:  "tcp4",
			specs: func(p string) []Spec { return []Spec{{Name: "http", Network: "tcp4", Address: "127.0.0.1:0"}} },
		},
		{
			name: "stale unix socket is removed",
			setup: func(t *testing.T, p string) {
				l, err := net.Listen("unix", p)
				if err != nil {
					t.Fatal(err)
				}
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				l.Close()
			},
			specs: func(p string) []Spec { return []Spec{{Name: "ctl", Network: "unix", Address: p}} },
		},
		{
			name: "live unix socket is kept",
			setup: func(t *testing.T, p string) {
				l, err := net.Listen("unix", p)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			},
			specs:   func(p string) []Spec { return []Spec{{Name: "ctl", Network: "unix", Address: p}} },
			wantErr: unix.EADDRINUSE, kept: true,
		},
		{
			name: "a regular file is kept",
			setup: func(t *testing.T, p string) {
				if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			specs:   func(p string) []Spec { return []Spec{{Name: "ctl", Network: "unix", Address: p}} },
			wantErr: os.ErrExist, kept: true,
		},
		{
			name:    "no fallback address",
			specs:   func(p string) []Spec { return []Spec{{Name: "http", Address: "127.0.0.1:0"}, {Name: "admin"}} },
			wantErr: ErrMissing,
		},
		{
			name:    "cancelled",
			specs:   func(p string) []Spec { return []Spec{{Name: "http", Address: "127.0.0.1:0"}} },
			ctx:     func() context.Context { ctx, cancel := context.WithCancel(context.Background()); cancel(); return ctx },
			wantErr: context.Canceled,
		},
		{
			name: "second bind fails, first is closed",
			setup: func(t *testing.T, p string) {
				l, err := net.Listen("unix", p)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			},
			specs: func(p string) []Spec {
				return []Spec{{Name: "other", Network: "unix", Address: p + ".2"}, {Name: "ctl", Network: "unix", Address: p}}
			},
			wantErr: unix.EADDRINUSE, kept: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(sockDir(t), "ctl.sock")
			if tt.setup != nil {
				tt.setup(t, path)
			}
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			specs := tt.specs(path)
			set, err := Listen(ctx, specs...)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Listen(%+v) = %v, want %v", specs, err, tt.wantErr)
				}
				var fe *FDError
				if !errors.As(err, &fe) || fe.FD != -1 {
					t.Errorf("Listen(%+v) error %v, want an FDError without fd", specs, err)
				}
				if _, serr := os.Lstat(path); tt.kept && serr != nil {
					t.Errorf("after Listen(%+v) error: %v, want %s kept", specs, serr, path)
				}
				if _, serr := os.Lstat(path + ".2"); !errors.Is(serr, os.ErrNotExist) {
					t.Errorf("after Listen(%+v) error: %s.2 is %v, want it unlinked by the cleanup", specs, path, serr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Listen(%+v) = %v", specs, err)
			}
			defer set.Close()
			if set.Source() != Bound {
				t.Errorf("Source() = %v, want bound", set.Source())
			}
			if len(set.Files()) != len(specs) {
				t.Errorf("Files() = %v, want %d", set.Files(), len(specs))
			}
			for _, sp := range specs {
				l, err := set.Listener(sp.Name)
				if err != nil {
					t.Fatalf("Listener(%q) = %v", sp.Name, err)
				}
				network := sp.Network
				if network == "" || network == "tcp4" {
					network = "tcp"
				}
				go func() {
					c, err := l.Accept()
					if err == nil {
						fmt.Fprintln(c, sp.Name)
						c.Close()
					}
				}()
				if got := dialName(t, network, l.Addr().String()); got != sp.Name {
					t.Errorf("answer on %s = %q, want %q", sp.Name, got, sp.Name)
				}
			}
		})
	}
}

// TestCloseUnlink: a bound unix socket path goes with Close, unless the
// Set was handed on.
func TestCloseUnlink(t *testing.T) {
	for _, handOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("handed on %v", handOn), func(t *testing.T) {
			path := filepath.Join(sockDir(t), "ctl.sock")
			set, err := Listen(context.Background(), Spec{Name: "ctl", Network: "unix", Address: path})
			if err != nil {
				t.Fatal(err)
			}
			if handOn {
				set.Files()
			}
			if err := set.Close(); err != nil {
				t.Fatalf("Close() = %v", err)
			}
			if err := set.Close(); err != nil {
				t.Errorf("second Close() = %v, want nil", err)
			}
			_, err = os.Lstat(path)
			if handOn && err != nil {
				t.Errorf("after Close of a handed-on Set: %v, want %s kept", err, path)
			}
			if !handOn && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after Close: %s is %v, want it removed", path, err)
			}
		})
	}
}

func TestSetAccessors(t *testing.T) {
	set, err := Listen(context.Background(), Spec{Name: "http", Address: "127.0.0.1:0"}, Spec{Name: "admin", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if got, want := set.Names(), []string{"http", "admin"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	if _, err := set.Listener("metrics"); !errors.Is(err, ErrMissing) {
		t.Errorf("Listener(metrics) = %v, want ErrMissing", err)
	}
	if got := set.Listeners("metrics"); got != nil {
		t.Errorf("Listeners(metrics) = %v, want nil", got)
	}
	// A listener the caller closed already does not make Close fail.
	l, _ := set.Listener("http")
	l.Close()
	if err := set.Close(); err != nil {
		t.Errorf("Close() after closing a listener = %v, want nil", err)
	}
	if files, env := set.Export(3); files != nil || env != nil {
		t.Errorf("Export(3) after Close = %v, %q, want nothing", files, env)
	}
}

// TestBindDatagram binds stream and datagram sockets and leaves out an
// Optional Spec without an Address; the datagram socket answers, is
// exported by name, and a unixgram path it bound goes with Close.
func TestBindDatagram(t *testing.T) {
	gram := filepath.Join(sockDir(t), "g.sock")
	set, err := Listen(context.Background(),
		Spec{Name: "http", Address: "127.0.0.1:0"},
		Spec{Name: "udp", Network: "udp", Address: "127.0.0.1:0"},
		Spec{Name: "log", Network: "unixgram", Address: gram},
		Spec{Name: "grpc", Optional: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := set.Names(), []string{"http", "udp", "log"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	if set.Has("grpc") {
		t.Error(`Has("grpc") = true for an Optional Spec without an Address`)
	}
	if _, err := set.Listener("udp"); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "PacketConn") {
		t.Errorf(`Listener("udp") error = %v, want ErrMissing pointing to PacketConn`, err)
	}
	pc, err := set.PacketConn("udp")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("ReadFrom() = %q, %v, want ping", buf[:n], err)
	}
	var names []string
	for _, f := range set.Files() {
		names = append(names, f.Name)
	}
	if want := []string{"http", "udp", "log"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Files() names = %q, want %q", names, want)
	}
	other := filepath.Join(sockDir(t), "h.sock")
	set2, err := Listen(context.Background(), Spec{Name: "log", Network: "unixgram", Address: other})
	if err != nil {
		t.Fatal(err)
	}
	if err := set2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unixgram path after Close: %v, want it removed", err)
	}
	if err := set.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(gram); err != nil {
		t.Errorf("unixgram path of a handed-on Set after Close: %v, want it kept", err)
	}
}

// connPair returns a connected TCP pair on loopback: the server side as a
// passed descriptor (what a service stores), and the client side.
func connPair(t *testing.T) (sock, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close() // the file is a copy of its own
	return fileOf(t, server.(*net.TCPConn), io.NopCloser(nil), client.LocalAddr().String()), client
}

// TestListenStoredConns: descriptors named ConnName(socket) are
// connections a previous start stored; Listen gives those of a stream
// Spec to TakeConns (the same TCP connections: what the child writes on
// them reaches the clients' ends), and closes the others without failing
// (a listener under a conn- name, a socket no Spec asks for, one of a
// datagram Spec), saying why in Dropped. ConnNames lists every such name
// for the removal from the store.
func TestListenStoredConns(t *testing.T) {
	ln := tcpSock(t)
	c1, cl1 := connPair(t)
	c2, cl2 := connPair(t)
	gone, _ := connPair(t)
	udp := udpSock(t)
	notConn := tcpSock(t)
	files := []*os.File{ln.file, c1.file, udp.file, c2.file, notConn.file, gone.file}
	env := []string{"LISTEN_FDS=6", "LISTEN_FDNAMES=http:conn-http:udp:conn-http:conn-http:conn-admin", childPIDEnv + "=self"}
	specs := []Spec{{Name: "http"}, {Name: "udp", Network: "udp"}}
	r, _, cmd := startChild(t, "conns", specs, files, env...)
	// The child has its copies: ours would keep the connections open.
	for _, f := range files[1:] {
		f.Close()
	}
	if r.Err != "" {
		t.Fatalf("Listen() error = %s, want none: stored connections that cannot be served are dropped, not fatal", r.Err)
	}
	if want := []string{c1.addr, c2.addr}; !reflect.DeepEqual(r.Conns["http"], want) {
		t.Errorf("TakeConns(\"http\") remote addresses = %q, want %q", r.Conns["http"], want)
	}
	if len(r.Conns["udp"]) != 0 {
		t.Errorf("TakeConns(\"udp\") = %q, want none", r.Conns["udp"])
	}
	if want := []string{"conn-http", "conn-admin"}; !reflect.DeepEqual(r.ConnNames, want) {
		t.Errorf("ConnNames() = %q, want %q", r.ConnNames, want)
	}
	if want := []fdError{{7, "conn-http"}, {8, "conn-admin"}}; !reflect.DeepEqual(r.Dropped, want) {
		t.Errorf("Dropped() = %v (%q), want %v", r.Dropped, r.DroppedMsg, want)
	}
	if len(r.Files) != 2 || len(r.Addrs["http"]) != 1 {
		t.Errorf("Files() = %q, Listeners(\"http\") = %q: want the two sockets only, not the connections", r.Files, r.Addrs["http"])
	}
	// The connections are the clients' own: what the child wrote comes
	// out of them, and then the child's close.
	for i, cl := range []net.Conn{cl1, cl2} {
		cl.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(cl)
		if err != nil || !strings.HasPrefix(string(b), "pid ") {
			t.Errorf("client %d read %q, %v; want the child's pid, then EOF", i+1, b, err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
	// (Whether the connections' passed descriptors were closed cannot be
	// read from the numbers: the runtime reuses them at once.)
	for _, fd := range r.FDs {
		if (fd.FD == 3 || fd.FD == 5) && !fd.Open {
			t.Errorf("after Listen fd %d (a socket) is closed, want it open", fd.FD)
		}
	}
}
