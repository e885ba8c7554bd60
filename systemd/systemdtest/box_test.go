package systemdtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "" {
		sweep()
	}
	code := m.Run()
	if os.Getenv(helperEnv) == "" {
		sweep()
	}
	os.Exit(code)
}

func sweep() {
	if err := Sweep(DefaultDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// echoService is a socket-activated Type=notify service: it checks the
// activation environment, reports READY=1 and answers every connection
// with one line describing what it got.
const echoService = `#!/usr/bin/python3
import os, socket
assert os.environ["LISTEN_PID"] == str(os.getpid())
fds = int(os.environ["LISTEN_FDS"])
names = os.environ.get("LISTEN_FDNAMES", "")
srv = socket.socket(fileno=3)
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.connect(os.environ["NOTIFY_SOCKET"])
n.send(b"READY=1\nSTATUS=echoing")
print("echo: serving", flush=True)
while True:
    c, _ = srv.accept()
    c.sendall(f"fds={fds} names={names} pid={os.getpid()}\n".encode())
    c.close()
`

// installEcho installs the echo service and its socket on 127.0.0.1:port
// and starts the socket.
func installEcho(t *testing.T, b *Box, port int) {
	t.Helper()
	b.WriteFile(t, "/usr/local/bin/sdt-echo", []byte(echoService), 0o755)
	b.WriteFile(t, "/etc/systemd/system/sdt-echo.socket",
		fmt.Appendf(nil, "[Socket]\nListenStream=127.0.0.1:%d\nFileDescriptorName=echo\n", port), 0o644)
	b.WriteFile(t, "/etc/systemd/system/sdt-echo.service",
		[]byte("[Service]\nType=notify\nExecStart=/usr/local/bin/sdt-echo\n"), 0o644)
	b.Systemctl(t, "daemon-reload")
	b.Systemctl(t, "start", "sdt-echo.socket")
}

// readEcho reads the echo service's answer on conn and returns the PID it
// reports.
func readEcho(t *testing.T, conn net.Conn) int {
	t.Helper()
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read from the echo service: %v", err)
	}
	got := strings.TrimSpace(string(b))
	pid, ok := strings.CutPrefix(got, "fds=1 names=echo pid=")
	n, err := strconv.Atoi(pid)
	if !ok || err != nil {
		t.Fatalf("echo service answered %q, want fds=1 names=echo pid=N", got)
	}
	return n
}

func TestSocketActivation(t *testing.T) {
	t.Parallel()
	b := Boot(t, Options{})
	port := Port(t)
	installEcho(t, b, port)

	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatalf("dial the box's socket from the host: %v", err)
	}
	pid := readEcho(t, conn)

	props := b.Show(t, "sdt-echo.service", "ActiveState", "MainPID", "StatusText")
	if props["ActiveState"] != "active" || props["MainPID"] != strconv.Itoa(pid) || props["StatusText"] != "echoing" {
		t.Errorf("Show(sdt-echo.service) = %v, want ActiveState=active MainPID=%d StatusText=echoing", props, pid)
	}
	if got := b.Show(t, "no-such.service", "LoadState")["LoadState"]; got != "not-found" {
		t.Errorf("Show(no-such.service) LoadState = %q, want not-found", got)
	}
	if j := journalWith(t, b, "echo: serving", "-u", "sdt-echo.service", "-o", "cat"); !strings.Contains(j, "echo: serving") {
		t.Errorf("Journal(-u sdt-echo.service) = %q, want the service's output", j)
	}
	if got := string(b.ReadFile(t, "/etc/hostname")); got != b.Name()+"\n" {
		t.Errorf("ReadFile(/etc/hostname) = %q, want %q", got, b.Name()+"\n")
	}

	// A restart keeps the socket: the next connection reaches a new process.
	b.Systemctl(t, "restart", "sdt-echo.service")
	conn, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatalf("dial after restart: %v", err)
	}
	if pid2 := readEcho(t, conn); pid2 == pid {
		t.Errorf("after restart the service still has PID %d", pid)
	}

	// What Boot's cleanup logs when a test fails.
	r := &recorder{TB: t}
	b.logDiagnostics(r)
	if !strings.Contains(r.logs, "failed units:") || !strings.Contains(r.logs, "echo: serving") {
		t.Errorf("logDiagnostics logged %q, want the failed units and the journal", r.logs)
	}

	b.Systemctl(t, "stop", "sdt-echo.socket", "sdt-echo.service")
	if got := b.Show(t, "sdt-echo.service", "ActiveState")["ActiveState"]; got != "inactive" {
		t.Errorf("after stop: ActiveState = %q, want inactive", got)
	}
}

func TestExec(t *testing.T) {
	t.Parallel()
	b := Boot(t, Options{})
	ctx := t.Context()

	// The environment is clean, the process is in the box's PID namespace
	// and has PID 1's bounding set.
	out := b.Run(t, "sh", "-c", `echo "$PATH|${NOTIFY_SOCKET-unset}|$LANG"; readlink /proc/self/ns/pid; grep CapBnd /proc/self/status`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || lines[0] != boxPATH+"|unset|C.UTF-8" {
		t.Fatalf("environment in the box = %q, want PATH=%s, no NOTIFY_SOCKET, LANG=C.UTF-8", out, boxPATH)
	}
	if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", b.PID1())); lines[1] != ns {
		t.Errorf("pid namespace in the box = %s, want PID 1's %s", lines[1], ns)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.PID1()))
	if want, _ := statusField(status, "CapBnd"); strings.Fields(lines[2])[1] != want {
		t.Errorf("bounding set in the box = %s, want PID 1's %s", lines[2], want)
	}

	_, stderr, err := b.Exec(ctx, "sh", "-c", "echo oops >&2; exit 3")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || stderr != "oops\n" {
		t.Errorf("Exec(exit 3) = stderr %q, err %v; want oops and an *exec.ExitError with code 3", stderr, err)
	}

	// Run's failure names the command and shows both outputs.
	msg := fatalOf(t, func(tb testing.TB) { b.Run(tb, "sh", "-c", "echo out; echo err >&2; false") })
	for _, want := range []string{"echo out; echo err", "exit status 1", "stdout:\nout\n", "stderr:\nerr\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Run(failing) message = %q, want it to contain %q", msg, want)
		}
	}

	// Custom stdin through Command.
	cmd := b.Command(ctx, "cat")
	cmd.Stdin = strings.NewReader("through stdin")
	if got, err := cmd.Output(); err != nil || string(got) != "through stdin" {
		t.Errorf("Command(cat) with stdin = %q, %v; want the input back", got, err)
	}

	// A cancelled context kills the command inside the box, not only nsenter.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = b.Exec(cctx, "sh", "-c", "exec sleep 100")
	if err == nil || time.Since(start) > 10*time.Second {
		t.Errorf("Exec(sleep 100) with a 300ms context = %v after %v, want an error at once", err, time.Since(start))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, err := b.Exec(ctx, "pgrep", "-x", "sleep")
		if err != nil {
			break // no sleep left
		}
		if time.Now().After(deadline) {
			t.Errorf("sleep still runs in the box after its command was cancelled")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Files: modes, no escape to the host, replacing a running binary.
	b.CopyFile(t, "/bin/sleep", "/opt/sdt/deep/sleep", 0o750)
	info, err := os.Stat(filepath.Join(b.Root(), "opt/sdt/deep/sleep"))
	if err != nil || info.Mode().Perm() != 0o750 {
		t.Errorf("CopyFile(0750): stat = %v, %v; want mode 0750", info, err)
	}
	if _, err := os.Stat("/opt/sdt"); err == nil {
		t.Errorf("/opt/sdt exists on the host: the box's files must stay in its overlay")
	}
	bctx, stop := context.WithCancel(ctx)
	busy := b.Command(bctx, "/opt/sdt/deep/sleep", "100")
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stop(); busy.Wait() }()
	b.Run(t, "sh", "-c", "until pgrep -x sleep; do sleep 0.01; done")
	b.CopyFile(t, "/bin/sleep", "/opt/sdt/deep/sleep", 0o755)
	if err := b.writeFile("relative/path", strings.NewReader(""), 0o644); err == nil {
		t.Errorf("writeFile(relative/path) succeeded, want an error")
	}
}

func TestPrivateNetwork(t *testing.T) {
	t.Parallel()
	b := Boot(t, Options{PrivateNetwork: true})
	port := Port(t) // free on the host, so the host refuses connections to it
	installEcho(t, b, port)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s from the host succeeded; the box's loopback must be its own", addr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		conn, err := b.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("DialContext(%s) #%d: %v", addr, i, err)
		}
		readEcho(t, conn)
	}
	// The dialing thread went back to the host's namespace.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("dial %s from the host succeeded after DialContext", addr)
	}
}

func TestParallelBoxes(t *testing.T) {
	t.Parallel()
	Require(t)
	// Boot two boxes at the same moment, one on each kind of network, with
	// the same name prefix; Boot is a thin wrapper around newBox and boot.
	boxes := make([]*Box, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range boxes {
		b, err := newBox("parallel", Options{PrivateNetwork: i == 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Error(err)
			}
		})
		boxes[i] = b
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), bootTimeout)
			defer cancel()
			errs[i] = b.boot(ctx)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("boot box %d: %v", i, err)
		}
	}
	if boxes[0].Name() == boxes[1].Name() || boxes[0].PID1() == boxes[1].PID1() {
		t.Fatalf("two boxes with name %s and PID 1 %d", boxes[0].Name(), boxes[0].PID1())
	}
	for _, b := range boxes {
		if got := strings.TrimSpace(b.Run(t, "hostname")); got != b.Name() {
			t.Errorf("hostname in box %s = %q, want its name", b.Name(), got)
		}
		b.WriteFile(t, "/etc/sdt-owner", []byte(b.Name()), 0o644)
	}
	for _, b := range boxes {
		if got := strings.TrimSpace(b.Run(t, "cat", "/etc/sdt-owner")); got != b.Name() {
			t.Errorf("/etc/sdt-owner in box %s = %q: the boxes share files", b.Name(), got)
		}
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	t.Parallel()
	b := Boot(t, Options{})
	b.Run(t, "systemd-run", "--unit=sdt-sleep", "--", "sleep", "1000")
	stray := b.Command(t.Context(), "sleep", "1000") // not supervised by the box's systemd
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	st, dir := b.st, b.dir
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	t.Logf("Close took %v", time.Since(start))
	checkGone(t, dir, st)
	if err := b.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	done := make(chan error, 1)
	go func() { done <- stray.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("a command started in the box survived Close")
	}
	if _, _, err := b.Exec(t.Context(), "true"); err == nil {
		t.Errorf("Exec after Close succeeded, want ErrDown")
	}
}

// checkGone checks that nothing of the box with state st is left.
func checkGone(t *testing.T, dir string, st state) {
	t.Helper()
	for _, p := range []proc{st.Nspawn, st.Init} {
		if alive(p) {
			t.Errorf("process %d is still alive", p.PID)
		}
	}
	for _, cg := range st.Cgroups {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("cgroup %s is still there (processes: %v)", cg, cgroupProcs(cg))
		}
	}
	if m := hostMounts(dir, st.Name); len(m) > 0 {
		t.Errorf("host mounts left: %v", m)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("state directory %s is still there", dir)
	}
}

// helperEnv makes TestHelperBoxOwner boot a box under the given directory,
// print its name and hang until killed.
const helperEnv = "SYSTEMDTEST_HELPER_DIR"

func TestHelperBoxOwner(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		return
	}
	b := Boot(t, Options{Dir: dir, Name: "owner"})
	fmt.Printf("booted %s\n", b.Name())
	time.Sleep(time.Minute)
}

func TestSweep(t *testing.T) {
	Require(t)
	t.Parallel()
	parent, err := os.MkdirTemp("/var/tmp", "systemdtest-sweep-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(parent) })

	t.Run("owner killed", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBoxOwner$", "-test.timeout=2m")
		cmd.Env = append(os.Environ(), helperEnv+"="+parent)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		line := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if name, ok := strings.CutPrefix(sc.Text(), "booted "); ok {
					line <- name
				}
			}
			close(line)
		}()
		var name string
		select {
		case name = <-line:
		case <-time.After(time.Minute):
			t.Fatal("the helper process did not boot a box")
		}
		dir := filepath.Join(parent, name)
		st, err := readState(dir)
		if err != nil {
			t.Fatal(err)
		}

		// While its owner lives, Sweep leaves the box alone.
		if err := Sweep(parent); err != nil {
			t.Fatalf("Sweep with a live owner = %v", err)
		}
		if !alive(st.Init) {
			t.Fatalf("Sweep stopped the box of a live test process")
		}

		cmd.Process.Kill()
		cmd.Wait()
		start := time.Now()
		if err := Sweep(parent); err != nil {
			t.Fatalf("Sweep after the owner died = %v", err)
		}
		t.Logf("Sweep took %v", time.Since(start))
		checkGone(t, dir, st)
	})

	t.Run("box running, owner gone", func(t *testing.T) {
		b := Boot(t, Options{Dir: parent})
		st, dir := b.st, b.dir
		b.lock.Close() // what the kernel does when the test process dies
		if !alive(st.Init) || !alive(st.Nspawn) {
			t.Fatal("box not running")
		}
		if err := Sweep(parent); err != nil {
			t.Fatalf("Sweep = %v", err)
		}
		checkGone(t, dir, st)
		if err := b.Close(); err != nil {
			t.Errorf("Close after Sweep = %v, want nil", err)
		}
	})
}

// requireTool fails (CI) or skips the test if a host tool is missing.
func requireTool(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		requireWith(t, fmt.Errorf("%s is missing (make deps installs it)", tool))
	}
}

func TestPackageInstall(t *testing.T) {
	t.Parallel()
	requireTool(t, "dpkg-deb")
	requireTool(t, "rpmbuild")
	b := Boot(t, Options{})
	const unit = "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/echo started by %s\n"

	// A deb whose postinst enables and starts its service the Debian way:
	// this needs the box's policy-rc.d gone.
	pkg := t.TempDir()
	files := map[string]string{
		"DEBIAN/control": "Package: sdt-deb\nVersion: 1.0\nArchitecture: all\n" +
			"Maintainer: baton <baton@example.org>\nDescription: systemdtest package\n",
		"DEBIAN/postinst": "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n" +
			"  systemctl daemon-reload\n  deb-systemd-helper enable sdt-deb.service\n" +
			"  deb-systemd-invoke start sdt-deb.service\nfi\n",
		"lib/systemd/system/sdt-deb.service": fmt.Sprintf(unit, "postinst") + "[Install]\nWantedBy=multi-user.target\n",
	}
	for name, data := range files {
		p := filepath.Join(pkg, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if name == "DEBIAN/postinst" {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(t.TempDir(), "sdt-deb.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkg, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	b.CopyFile(t, deb, "/var/tmp/sdt-deb.deb", 0o644)
	b.Run(t, "dpkg", "-i", "/var/tmp/sdt-deb.deb")
	if got := b.Show(t, "sdt-deb.service", "ActiveState")["ActiveState"]; got != "active" {
		t.Errorf("after dpkg -i: sdt-deb.service ActiveState = %q, want active", got)
	}
	if out, err := exec.Command("dpkg-query", "-W", "sdt-deb").CombinedOutput(); err == nil {
		t.Errorf("sdt-deb is installed on the host too: %s", out)
	}

	// An rpm whose %post starts its service.
	top := t.TempDir()
	spec := filepath.Join(top, "sdt-rpm.spec")
	specText := "Name: sdt-rpm\nVersion: 1.0\nRelease: 1\nSummary: systemdtest package\nLicense: MIT\n" +
		"BuildArch: noarch\nAutoReqProv: no\n%description\nsystemdtest package\n" +
		"%install\nmkdir -p %{buildroot}/usr/lib/systemd/system\n" +
		"printf '" + strings.ReplaceAll(fmt.Sprintf(unit, "post"), "\n", `\n`) + "' > %{buildroot}/usr/lib/systemd/system/sdt-rpm.service\n" +
		"%post\nsystemctl daemon-reload\nsystemctl start sdt-rpm.service\n" +
		"%files\n/usr/lib/systemd/system/sdt-rpm.service\n"
	if err := os.WriteFile(spec, []byte(specText), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("rpmbuild", "--define", "_topdir "+top, "-bb", spec).CombinedOutput(); err != nil {
		t.Fatalf("rpmbuild: %v\n%s", err, out)
	}
	rpms, _ := filepath.Glob(filepath.Join(top, "RPMS", "noarch", "*.rpm"))
	if len(rpms) != 1 {
		t.Fatalf("rpmbuild made %v, want one rpm", rpms)
	}
	b.CopyFile(t, rpms[0], "/var/tmp/sdt-rpm.rpm", 0o644)
	// --nodeps: the box's rpm database is empty, /bin/sh is not in it.
	b.Run(t, "rpm", "-i", "--nodeps", "/var/tmp/sdt-rpm.rpm")
	if got := b.Show(t, "sdt-rpm.service", "ActiveState")["ActiveState"]; got != "active" {
		t.Errorf("after rpm -i: sdt-rpm.service ActiveState = %q, want active", got)
	}
	if j := journalWith(t, b, "started by post", "-u", "sdt-rpm.service", "-o", "cat"); !strings.Contains(j, "started by post") {
		t.Errorf("journal of sdt-rpm.service = %q, want its output", j)
	}
}
