package systemdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// DefaultDir is the parent of the boxes' state directories when
// Options.Dir is empty.
const DefaultDir = "/var/tmp/baton-sdbox"

// ErrDown is returned by a Box's methods once the box has been torn down.
var ErrDown = errors.New("systemdtest: box is down")

const (
	cgroupParent   = "baton-sdbox"    // /sys/fs/cgroup/<hierarchy>/baton-sdbox/<name>
	bootTimeout    = 60 * time.Second // 8 boxes booting at once on 2 cores take 2-3 s each
	stopTimeout    = 5 * time.Second  // orderly poweroff before SIGKILL
	killTimeout    = 5 * time.Second  // for killed processes to be gone
	commandTimeout = 2 * time.Minute  // Run and the helpers built on it
	waitDelay      = 5 * time.Second  // exec.Cmd.WaitDelay of commands in a box
	pollInterval   = 10 * time.Millisecond
)

// boxSeq makes box names unique within the process.
var boxSeq atomic.Uint64

// Options configure a box. The zero value boots a box that shares the
// host's network.
type Options struct {
	// PrivateNetwork gives the box its own network namespace with nothing
	// but a loopback interface: every box can use the same ports, and the
	// host reaches the box only through Box.DialContext. Without it the
	// box shares the host's network: 127.0.0.1:PORT inside is
	// 127.0.0.1:PORT on the host, so take ports from Port.
	PrivateNetwork bool
	// Name prefixes the box's name (its hostname, state directory and
	// cgroups). Empty means the test's name.
	Name string
	// Dir is the parent of the box's state directory. Empty means
	// DefaultDir. The path may not contain white space, commas or colons
	// (overlayfs option syntax).
	Dir string
	// Root is the lower layer of the box's overlay: empty means the host's
	// root (and its systemd); a directory from DebianRoot boots that
	// Debian release's systemd. The path may not contain white space,
	// commas or colons.
	Root string
}

// Box is a running systemd booted by Boot. Its methods may be called from
// several goroutines; those taking a testing.TB follow its rules (Fatal
// only from the test's goroutine).
type Box struct {
	name           string
	dir            string
	privateNetwork bool
	lower          string // the overlay's lower layer
	version        string // systemd's major version inside, e.g. "257"

	lock  *os.File // flock on dir, held while the box is ours
	st    state    // written during boot only
	caps  string   // setpriv --bounding-set argument
	netns *os.File // the box's network namespace (PrivateNetwork only)

	exited  chan struct{} // closed once nspawn has exited and been reaped
	exitErr error         // nspawn's exit status, valid once exited is closed

	ready     atomic.Bool // booted to running
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Boot boots a box for the test t and returns once systemd inside reports
// "running". Boot first applies Require's policy, so off CI it skips the
// test where a box cannot be booted. A failed boot fails the test with the
// reason and systemd-nspawn's console output. Boot registers a cleanup that
// always tears the box down (after logging the box's failed units and
// journal if the test failed) and fails the test if the teardown leaves a
// process, a cgroup or a mount behind.
func Boot(t testing.TB, opts Options) *Box {
	t.Helper()
	Require(t)
	name := opts.Name
	if name == "" {
		name = t.Name()
	}
	b, err := newBox(name, opts)
	if err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() && b.ready.Load() && !b.closed.Load() {
			b.logDiagnostics(t)
		}
		if err := b.Close(); err != nil {
			t.Errorf("systemdtest: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	start := time.Now()
	if err := b.boot(ctx); err != nil {
		t.Fatalf("systemdtest: boot box %s: %v", b.name, err)
	}
	t.Logf("systemdtest: box %s running systemd %s after %v (pid1 %d, root %s)", b.name, b.version, time.Since(start).Round(time.Millisecond), b.st.Init.PID, b.lower)
	return b
}

// newBox claims a state directory under opts.Dir and locks it.
func newBox(name string, opts Options) (*Box, error) {
	parent := opts.Dir
	if parent == "" {
		parent = DefaultDir
	}
	parent, err := filepath.Abs(parent)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(parent, " \t\n,:") {
		return nil, fmt.Errorf("state directory %q contains white space, ',' or ':'", parent)
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	lower := "/"
	if opts.Root != "" {
		if lower, err = filepath.Abs(opts.Root); err != nil {
			return nil, err
		}
		if strings.ContainsAny(lower, " \t\n,:") {
			return nil, fmt.Errorf("root %q contains white space, ',' or ':'", lower)
		}
		if _, err := os.Stat(filepath.Join(lower, "lib/systemd/systemd")); err != nil {
			return nil, fmt.Errorf("root %s has no systemd: %w", lower, err)
		}
	}
	prefix := sanitizeName(name, 32)
	for {
		name := fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), boxSeq.Add(1))
		dir := filepath.Join(parent, name)
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue // left behind by an earlier process with the same PID
		}
		if err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
		lock, err := lockDir(dir, true)
		if err != nil {
			_ = os.Remove(dir)
			return nil, fmt.Errorf("lock state directory: %w", err)
		}
		return &Box{name: name, dir: dir, privateNetwork: opts.PrivateNetwork, lower: lower, lock: lock}, nil
	}
}

// boot starts systemd-nspawn and waits until the box's systemd is running.
// On error the caller tears the box down with Close.
func (b *Box) boot(ctx context.Context) error {
	owner, err := procOf(os.Getpid())
	if err != nil {
		return err
	}
	b.st = state{Name: b.name, Owner: owner}
	roots, err := cgroupRoots()
	if err != nil {
		return err
	}
	var procsFiles []string
	for _, r := range roots {
		cg := filepath.Join(r, cgroupParent, b.name)
		b.st.Cgroups = append(b.st.Cgroups, cg)
		if err := mkdirCgroup(cg); err != nil {
			return err
		}
		procsFiles = append(procsFiles, filepath.Join(cg, "cgroup.procs"))
	}
	for _, d := range []string{rwDir, rootDir} {
		if err := os.Mkdir(filepath.Join(b.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := writeSeed(filepath.Join(b.dir, seedDir), b.name); err != nil {
		return err
	}
	if err := writeState(b.dir, b.st); err != nil {
		return err
	}
	nspawn, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return err
	}
	console, err := os.OpenFile(filepath.Join(b.dir, consoleFile), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer console.Close() // nspawn has its own copy
	cmd := &exec.Cmd{
		Path: "/bin/sh",
		Args: append([]string{"sh", "-c", bootScript, "systemdtest-boot"},
			nspawnArgs(nspawn, b.dir, b.name, b.privateNetwork)...),
		// A clean environment: in particular no NOTIFY_SOCKET or LISTEN_*
		// of whatever runs the tests.
		Env: []string{
			"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
			"LANG=C.UTF-8",
			"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1",
			"SYSTEMD_COLORS=0",
			"BOX_NAME=" + b.name,
			"BOX_DIR=" + b.dir,
			"BOX_LOWER=" + b.lower,
			"BOX_CGROUP_PROCS=" + strings.Join(procsFiles, " "),
		},
		Dir:         "/",
		Stdout:      console,
		Stderr:      console,
		SysProcAttr: bootSysProcAttr(),
	}
	if err := b.start(cmd); err != nil {
		return b.withConsole(fmt.Errorf("start systemd-nspawn: %w", err))
	}
	if b.st.Nspawn, err = procOf(cmd.Process.Pid); err != nil {
		return b.withConsole(fmt.Errorf("systemd-nspawn exited at once: %w", err))
	}
	if err := writeState(b.dir, b.st); err != nil {
		return err
	}
	for {
		if p, ok := findInit(b.st.Nspawn.PID); ok {
			b.st.Init = p
			break
		}
		if err := b.tick(ctx, "the box's PID 1"); err != nil {
			return b.withConsole(err)
		}
	}
	if err := writeState(b.dir, b.st); err != nil {
		return err
	}
	// systemctl answers "offline" until PID 1 has set up /run/systemd.
	for {
		if _, err := os.Stat(filepath.Join(b.Root(), "run/systemd/private")); err == nil {
			break
		}
		if err := b.tick(ctx, "/run/systemd/private"); err != nil {
			return b.withConsole(err)
		}
	}
	// Only now is PID 1 systemd with nspawn's bounding set.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.st.Init.PID))
	if err != nil {
		return err
	}
	capBnd, _ := statusField(status, "CapBnd")
	if b.caps, err = boundingSetArg(capBnd); err != nil {
		return err
	}
	if b.privateNetwork {
		if b.netns, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", b.st.Init.PID)); err != nil {
			return err
		}
	}
	out, stderr, err := b.Exec(ctx, "systemctl", "is-system-running", "--wait")
	switch sys := strings.TrimSpace(out); sys {
	case "running":
	case "degraded":
		failed, _, _ := b.Exec(ctx, "systemctl", "--failed", "--no-legend", "--plain")
		journal, _, _ := b.Exec(ctx, "journalctl", "--no-pager", "-b", "-p", "warning")
		return fmt.Errorf("the box booted degraded; failed units:\n%s\njournal (warnings):\n%s", failed, tail(journal, 60))
	default:
		return b.withConsole(fmt.Errorf("systemctl is-system-running --wait = %q, want running (%w); stderr: %s", sys, err, strings.TrimSpace(stderr)))
	}
	vout, _, err := b.Exec(ctx, "systemctl", "--version")
	if err != nil {
		return err
	}
	v, ok := parseSystemdVersion(vout)
	if !ok {
		return fmt.Errorf("systemctl --version in the box: cannot read the version from %q", vout)
	}
	b.version = v
	b.ready.Store(true)
	return nil
}

// start runs cmd from a goroutine locked to its OS thread, which it keeps
// until nspawn exits: the Pdeathsig of bootSysProcAttr is sent when the
// thread that started the process ends, and that must only happen when the
// test process dies.
func (b *Box) start(cmd *exec.Cmd) error {
	started := make(chan error, 1)
	b.exited = make(chan struct{})
	go func() {
		runtime.LockOSThread()
		// Not unlocked: the thread ends with this goroutine, after nspawn.
		if err := cmd.Start(); err != nil {
			started <- err
			close(b.exited)
			return
		}
		started <- nil
		b.exitErr = cmd.Wait()
		close(b.exited)
	}()
	return <-started
}

// tick waits a little during boot; it fails if nspawn exited or ctx ended.
func (b *Box) tick(ctx context.Context, what string) error {
	select {
	case <-b.exited:
		return fmt.Errorf("systemd-nspawn exited (%v) while waiting for %s", b.exitErr, what)
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
	case <-time.After(pollInterval):
		return nil
	}
}

// withConsole appends the end of nspawn's console output to err.
func (b *Box) withConsole(err error) error {
	p := filepath.Join(b.dir, consoleFile)
	out, rerr := os.ReadFile(p)
	if rerr != nil {
		return fmt.Errorf("%w (console: %v)", err, rerr)
	}
	return fmt.Errorf("%w\nconsole output (%s):\n%s", err, p, tail(string(out), 80))
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// logDiagnostics logs the box's failed units and the end of its journal.
func (b *Box) logDiagnostics(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	failed, _, _ := b.Exec(ctx, "systemctl", "--failed", "--no-legend", "--plain")
	_, _, _ = b.Exec(ctx, "journalctl", "--sync")
	journal, _, _ := b.Exec(ctx, "journalctl", "--no-pager", "-b", "-n", "200", "-o", "short-monotonic")
	t.Logf("systemdtest: box %s at the end of the failed test\nfailed units:\n%s\njournal:\n%s", b.name, failed, journal)
}

// Name returns the box's name: its hostname, and the name of its state
// directory and cgroups.
func (b *Box) Name() string { return b.name }

// SystemdVersion returns the major version of the box's systemd, as
// `systemctl --version` inside reports it: 252 on Debian 12, 257 on
// Debian 13.
func (b *Box) SystemdVersion() int {
	n, _ := strconv.Atoi(b.version)
	return n
}

// PID1 returns the host PID of the box's systemd.
func (b *Box) PID1() int { return b.st.Init.PID }

// Root returns /proc/PID1/root, a host path to the box's file system.
// Beware that absolute symbolic links met below it resolve on the host;
// WriteFile, CopyFile and ReadFile refuse them instead.
func (b *Box) Root() string { return fmt.Sprintf("/proc/%d/root", b.st.Init.PID) }

// Command returns a command that runs args inside the box: in all of its
// namespaces and its root, with the capability bounding set of its PID 1
// and a clean environment (PATH, HOME=/root, LANG=C.UTF-8, TERM=dumb,
// SYSTEMD_COLORS=0, SYSTEMD_PAGER=; prefix args with "env", "K=V" to add
// variables). The process is not supervised by the box's systemd (use
// systemd-run for that), but it is killed with the box and when ctx is
// done. Stop it through ctx rather than by killing cmd.Process: that is
// nsenter, and its orphaned child would then wait for the host's PID 1 to
// reap it, which can hold up the box's poweroff. The caller may set Stdin, Stdout and Stderr. Once the
// command has exited, Wait waits at most 5 s for its output pipes
// (exec.Cmd.WaitDelay): a background process that keeps them open makes
// it return exec.ErrWaitDelay.
func (b *Box) Command(ctx context.Context, args ...string) *exec.Cmd {
	argv := []string{"nsenter", "-t", strconv.Itoa(b.st.Init.PID), "-a", "-r", "-w", "--",
		"setpriv", "--bounding-set", b.caps, "--inh-caps=-all", "--pdeathsig", "KILL", "--",
		"env", "-i", "PATH=" + boxPATH, "HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
		"SYSTEMD_COLORS=0", "SYSTEMD_PAGER="}
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
	cmd.Env = []string{"PATH=" + boxPATH}
	cmd.Dir = "/"
	cmd.WaitDelay = waitDelay
	cmd.Cancel = func() error { return killInBox(cmd.Process) }
	switch {
	case len(args) == 0:
		cmd.Err = errors.New("systemdtest: Command: no command")
	case b.closed.Load() || !alive(b.st.Init):
		cmd.Err = ErrDown
	}
	return cmd
}

// killInBox kills the process that nsenter forked into the box, so that
// nsenter reaps it and exits with its status. Killing nsenter instead would
// hand the process to the host's PID 1, which may take seconds to reap it,
// and a PID namespace cannot end (the box cannot power off) before all its
// zombies are reaped.
func killInBox(nsenter *os.Process) error {
	kids := children(nsenter.Pid)
	if len(kids) == 0 {
		return nsenter.Kill() // not forked yet
	}
	for _, pid := range kids {
		if p, err := procOf(pid); err == nil {
			_ = signalProc(p, syscall.SIGKILL)
		}
	}
	return nil
}

// Exec runs args inside the box like Command and returns its output. A
// non-zero exit is returned as an error wrapping *exec.ExitError.
func (b *Box) Exec(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	cmd := b.Command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), e.String(), fmt.Errorf("systemdtest: box %s: %s: %w", b.name, quoteArgs(args), err)
	}
	return o.String(), e.String(), nil
}

// Run runs args inside the box like Exec and returns its standard output.
// It fails the test, showing both outputs, if the command fails or takes
// longer than two minutes. It also works in cleanup functions registered
// after Boot (they run while the box is still up).
func (b *Box) Run(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, stderr, err := b.Exec(ctx, args...)
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	return out
}

// Systemctl runs systemctl with args inside the box and returns its
// standard output; it fails the test if systemctl fails.
func (b *Box) Systemctl(t testing.TB, args ...string) string {
	t.Helper()
	return b.Run(t, append([]string{"systemctl"}, args...)...)
}

// Show returns the properties props (all if none) of unit, as printed by
// `systemctl show`. An unknown unit is not an error: its LoadState is
// "not-found".
func (b *Box) Show(t testing.TB, unit string, props ...string) map[string]string {
	t.Helper()
	args := []string{"systemctl", "show"}
	for _, p := range props {
		args = append(args, "--property="+p)
	}
	return parseShow(b.Run(t, append(args, "--", unit)...))
}

// Journal asks the box's journald to flush what it has received, then
// returns the output of `journalctl --no-pager args...`, e.g.
// Journal(t, "-u", "webapp.service", "-o", "cat").
func (b *Box) Journal(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_, _, _ = b.Exec(ctx, "journalctl", "--sync")
	return b.Run(t, append([]string{"journalctl", "--no-pager"}, args...)...)
}

// WriteFile writes data to the absolute path name inside the box with the
// permissions mode, creating missing directories (0755). The file is
// written beside its destination and renamed over it, so replacing a
// running binary works. It fails the test on error.
func (b *Box) WriteFile(t testing.TB, name string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := b.writeFile(name, bytes.NewReader(data), mode); err != nil {
		t.Fatalf("systemdtest: box %s: write %s: %v", b.name, name, err)
	}
}

// CopyFile copies the host file hostPath to the absolute path name inside
// the box like WriteFile.
func (b *Box) CopyFile(t testing.TB, hostPath, name string, mode os.FileMode) {
	t.Helper()
	f, err := os.Open(hostPath)
	if err != nil {
		t.Fatalf("systemdtest: box %s: copy: %v", b.name, err)
	}
	defer f.Close()
	if err := b.writeFile(name, f, mode); err != nil {
		t.Fatalf("systemdtest: box %s: copy %s to %s: %v", b.name, hostPath, name, err)
	}
}

// ReadFile returns the contents of the absolute path name inside the box.
// It fails the test on error.
func (b *Box) ReadFile(t testing.TB, name string) []byte {
	t.Helper()
	data, err := b.readFile(name)
	if err != nil {
		t.Fatalf("systemdtest: box %s: read %s: %v", b.name, name, err)
	}
	return data
}

// boxRel checks that name is absolute and returns it relative to the root.
func boxRel(name string) (string, error) {
	if !path.IsAbs(name) {
		return "", fmt.Errorf("path %q is not absolute", name)
	}
	rel := strings.TrimPrefix(path.Clean(name), "/")
	if rel == "" {
		return "", fmt.Errorf("path %q names the root", name)
	}
	return rel, nil
}

func (b *Box) openRoot() (*os.Root, error) {
	if b.closed.Load() || !alive(b.st.Init) {
		return nil, ErrDown
	}
	return os.OpenRoot(b.Root())
}

func (b *Box) writeFile(name string, r io.Reader, mode os.FileMode) (err error) {
	rel, err := boxRel(name)
	if err != nil {
		return err
	}
	root, err := b.openRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	if dir := path.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	tmp := path.Join(path.Dir(rel), fmt.Sprintf(".%s.systemdtest-%d", path.Base(rel), boxSeq.Add(1)))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = root.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := root.Chmod(tmp, mode); err != nil {
		return err
	}
	return root.Rename(tmp, rel)
}

func (b *Box) readFile(name string) ([]byte, error) {
	rel, err := boxRel(name)
	if err != nil {
		return nil, err
	}
	root, err := b.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.ReadFile(rel)
}

// DialContext connects to addr from inside the box's network namespace.
// For a box on the host's network it is a plain dial. Its signature fits
// net/http.Transport.DialContext. Use numeric addresses: names are resolved
// with the host's configuration.
func (b *Box) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if b.closed.Load() {
		return nil, ErrDown
	}
	d := net.Dialer{FallbackDelay: -1} // dial from this goroutine only
	if !b.privateNetwork {
		return d.DialContext(ctx, network, addr)
	}
	return dialInNetns(ctx, b.netns, &d, network, addr)
}

// Close tears the box down: an orderly poweroff, SIGKILL after 5 s, then
// whatever is left in the box's cgroups is killed and the cgroups and the
// state directory are removed. It reports any process, cgroup or mount left
// behind. Close is idempotent; Boot's cleanup calls it.
func (b *Box) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		if b.netns != nil {
			b.netns.Close()
		}
		err := teardown(b.dir, b.st)
		if b.exited != nil {
			select { // reap nspawn, normally long done
			case <-b.exited:
			case <-time.After(killTimeout):
				err = errors.Join(err, fmt.Errorf("systemd-nspawn (pid %d) not reaped", b.st.Nspawn.PID))
			}
		}
		b.lock.Close()
		if err != nil {
			b.closeErr = fmt.Errorf("tear down box %s: %w", b.name, err)
		}
	})
	return b.closeErr
}

// teardown stops the box described by st whose state directory is dir and
// removes what it left. It works for a box of this process and for one
// left behind by a dead test process, and is idempotent. If anything is
// left, the state directory is kept so that Sweep can try again.
func teardown(dir string, st state) error {
	var errs []error
	if alive(st.Init) {
		stopCommands(st.Init.PID)
	}
	if alive(st.Nspawn) {
		// nspawn turns SIGTERM into --kill-signal=SIGRTMIN+4: systemd powers off.
		_ = signalProc(st.Nspawn, syscall.SIGTERM)
		waitGone(stopTimeout, st.Init, st.Nspawn)
	}
	if alive(st.Nspawn) || alive(st.Init) {
		// Killing nspawn alone leaves systemd running; killing PID 1 of the
		// box kills every process of its PID namespace.
		_ = signalProc(st.Init, syscall.SIGKILL)
		_ = signalProc(st.Nspawn, syscall.SIGKILL)
		if !waitGone(killTimeout, st.Init, st.Nspawn, st.Init) {
			errs = append(errs, fmt.Errorf("systemd-nspawn (pid %d) or the box's PID 1 (pid %d) survived SIGKILL", st.Nspawn.PID, st.Init.PID))
		}
	}
	// Normally empty by now; a box whose nspawn died before its PID 1 was
	// found still has its processes here.
	deadline := time.Now().Add(killTimeout)
	for killed := false; ; killed = true {
		left := liveProcs(st.Cgroups)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("processes left in the box's cgroups: %v", left))
			break
		}
		if !killed {
			for _, cg := range st.Cgroups {
				_ = os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0)
			}
			for _, p := range left {
				_ = signalProc(p, syscall.SIGKILL)
			}
		}
		time.Sleep(pollInterval)
	}
	// Zombies not yet reaped by the host's PID 1 can keep a cgroup busy.
	for _, cg := range st.Cgroups {
		for {
			err := removeCgroup(cg)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup: %w", err))
				break
			}
			time.Sleep(pollInterval)
		}
	}
	if m := hostMounts(dir, st.Name); len(m) > 0 {
		errs = append(errs, fmt.Errorf("mounts leaked to the host: %s", strings.Join(m, ", ")))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Never RemoveAll rw or root: if a mount had leaked, that would reach
	// into it. They are empty mount points on the host.
	if err := os.RemoveAll(filepath.Join(dir, seedDir)); err != nil {
		errs = append(errs, err)
	}
	// nspawn's image lock, left behind when nspawn was killed.
	lck := ".#" + rootDir + ".lck"
	for _, f := range []string{consoleFile, stateFile + ".tmp", lck, rwDir, rootDir, stateFile, ""} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitGone waits until none of ps is alive, for at most d, and keeps the
// nsenter processes of the box whose PID 1 is init going meanwhile (see
// continueNsenters). It reports whether they are all gone.
func waitGone(d time.Duration, init proc, ps ...proc) bool {
	deadline := time.Now().Add(d)
	for i := 0; ; i++ {
		continueNsenters(init.PID)
		if i%10 == 9 {
			_ = signalProc(init, syscall.SIGCHLD)
		}
		some := false
		for _, p := range ps {
			some = some || alive(p)
		}
		if !some {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
}

// nsenters returns the running nsenter processes of Box.Command for the box
// whose PID 1 is init, with their states.
func nsenters(init int) map[proc]byte {
	if init <= 0 {
		return nil
	}
	want := []byte("nsenter\x00-t\x00" + strconv.Itoa(init) + "\x00")
	entries, _ := os.ReadDir("/proc")
	found := make(map[proc]byte)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmdline, want) {
			continue
		}
		if st, err := readStat(pid); err == nil && st.state != 'Z' {
			found[proc{PID: pid, Start: st.start}] = st.state
		}
	}
	return found
}

// stopCommands kills what Box.Command runs in the box whose PID 1 is init,
// before the box powers off. nsenter, outside the box, is the parent of
// those processes; when they die during the poweroff, no SIGCHLD reaches
// systemd-shutdown, which waits for them until its 90 s timeout.
func stopCommands(init int) {
	for p := range nsenters(init) {
		for _, c := range children(p.PID) {
			if cp, err := procOf(c); err == nil {
				_ = signalProc(cp, syscall.SIGKILL)
			}
		}
	}
}

// continueNsenters resumes the stopped nsenter processes of the box whose
// PID 1 is init, and wakes up that PID 1. On poweroff systemd-shutdown
// stops every process of the box (kill(-1, SIGSTOP)) before it sends
// SIGTERM and SIGCONT; nsenter, which waits for its child with WUNTRACED,
// sees the child stop and stops itself, out of reach of the box's SIGCONT.
// Stopped, it never reaps its child, and the box's PID namespace, hence its
// PID 1 and nspawn, cannot end. Once nsenter has reaped the child, SIGCHLD
// makes systemd-shutdown look again at the processes it waits for.
func continueNsenters(init int) {
	for p, state := range nsenters(init) {
		if state == 'T' || state == 't' {
			_ = signalProc(p, syscall.SIGCONT)
		}
	}
}

// mkdirCgroup creates a box's cgroup. Another process's Sweep may remove
// the empty parent at the same moment: try again then.
func mkdirCgroup(dir string) error {
	var err error
	for range 5 {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			return nil
		}
		time.Sleep(pollInterval)
	}
	return fmt.Errorf("create cgroup: %w", err)
}

// Sweep tears down the boxes under parent (DefaultDir if empty) that no
// live Box holds: boxes of test processes that died (killed, timed out)
// and boxes whose teardown failed. Boxes of running test processes,
// including the caller's, are left alone. Call it from TestMain before and
// after m.Run. A missing parent is not an error, and without root Sweep
// does nothing (nothing could be booted either).
func Sweep(parent string) error {
	if parent == "" {
		parent = DefaultDir
	}
	if os.Geteuid() != 0 {
		return nil
	}
	entries, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("systemdtest: sweep: %w", err)
	}
	roots, _ := cgroupRoots()
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if err := sweepOne(filepath.Join(parent, e.Name()), e.Name(), roots); err != nil {
			errs = append(errs, fmt.Errorf("systemdtest: sweep %s: %w", filepath.Join(parent, e.Name()), err))
		}
	}
	for _, r := range roots { // only if no other box uses it
		_ = os.Remove(filepath.Join(r, cgroupParent))
	}
	return errors.Join(errs...)
}

func sweepOne(dir, name string, roots []string) error {
	lock, err := lockDir(dir, false)
	if errors.Is(err, errLocked) {
		return nil // a live Box, or another Sweep at work
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	st, err := readState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// Died between claiming the directory and writing the state, or
		// a teardown that removed the state but not the directory.
		info, err := os.Stat(dir)
		if err != nil || time.Since(info.ModTime()) < time.Minute {
			return err
		}
		st = state{Name: name}
		for _, r := range roots {
			st.Cgroups = append(st.Cgroups, filepath.Join(r, cgroupParent, name))
		}
	} else if err != nil {
		return err
	}
	return teardown(dir, st)
}
