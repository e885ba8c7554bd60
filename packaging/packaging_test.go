// Package packaging holds the tests of the webapp deb and rpm packages (the
// files next to this one: nfpm.yaml, packaging.mk, the maintainer scripts,
// the lintian and rpmlint configuration) and of the shipped unit files.
//
// The tests build the packages with `make deb rpm` and check them with the
// real tools: lintian, rpmlint, shellcheck, systemd-analyze, dpkg-deb, rpm.
// A missing tool fails the test when CI=true and skips it otherwise;
// `make deps` (as root) installs them. Installing, upgrading under load,
// downgrading and removing under a real systemd are tested in
// e2e/package_test.go, in a sandbox.
package packaging

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// maxExposure is the highest `systemd-analyze security` exposure accepted
// for webapp.service.
const maxExposure = 1.0

// toolTimeout bounds each external command.
const toolTimeout = 5 * time.Minute

var (
	scratch     string // removed by TestMain
	builds      sync.Map
	buildsMutex sync.Mutex
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "webapp-packaging-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is the top of the repository (the tests run in packaging/).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// version is the VERSION file's version, the default of `make deb`.
func version(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// requireTool returns the path of a host tool. A missing tool fails the
// test under CI=true and skips it otherwise.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s is not installed (CI=true): `make deps` as root installs it", name)
	}
	t.Skipf("%s is not installed: run `make deps` as root", name)
	return ""
}

// run runs a command to its end and returns its whole output (stdout and
// stderr together): host tools cut off mid-output leave temporary
// directories behind.
func run(t testing.TB, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %v)", err, toolTimeout)
	}
	return string(out), err
}

// mustRun is run that fails the test on a non-zero exit.
func mustRun(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(t, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// packages are the two files of one `make deb rpm`.
type packages struct {
	deb, rpm string
}

// build runs `make deb rpm DIST=<dir> VERSION=<v>` once per name and
// version in this test process, and returns the packages.
func build(t testing.TB, name, v string) packages {
	t.Helper()
	requireTool(t, "make")
	if arch := goArch(t); arch != "amd64" {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatalf("CI=true on %s: package file names are checked for amd64 only", arch)
		}
		t.Skipf("package file names are checked for amd64, not %s", arch)
	}
	key := name + "\x00" + v
	buildsMutex.Lock()
	defer buildsMutex.Unlock()
	if p, ok := builds.Load(key); ok {
		return p.(packages)
	}
	dist := filepath.Join(scratch, name+"-"+v)
	out, err := run(t, repoRoot(t), nil, "make", "--no-print-directory", "-C", repoRoot(t),
		"deb", "rpm", "DIST="+dist, "VERSION="+v)
	if err != nil {
		t.Fatalf("make deb rpm DIST=%s VERSION=%s: %v\n%s", dist, v, err, out)
	}
	p := packages{
		deb: filepath.Join(dist, "webapp_"+v+"_amd64.deb"),
		rpm: filepath.Join(dist, "webapp-"+v+".x86_64.rpm"),
	}
	for _, f := range []string{p.deb, p.rpm} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("make deb rpm: %v\n%s", err, out)
		}
	}
	builds.Store(key, p)
	return p
}

func goArch(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(mustRun(t, "", nil, "go", "env", "GOARCH"))
}

// defaultPackages are the packages of the VERSION file's version.
func defaultPackages(t testing.TB) packages {
	t.Helper()
	return build(t, "default", version(t))
}

// extractDeb unpacks the deb's files into a new directory.
func extractDeb(t testing.TB, deb string) string {
	t.Helper()
	requireTool(t, "dpkg-deb")
	root := t.TempDir()
	mustRun(t, "", nil, "dpkg-deb", "-x", deb, root)
	return root
}

// The files each package must hold, and no others (directories aside).
var (
	commonFiles = []string{
		"/usr/bin/webapp",
		"/usr/lib/systemd/system/webapp.service",
		"/usr/lib/systemd/system/webapp.socket",
		"/usr/lib/systemd/system/webapp-https.socket",
		"/usr/lib/systemd/system/webapp-grpc.socket",
		"/usr/lib/systemd/system/webapp-metrics.socket",
		"/usr/lib/systemd/system/webapp-udp.socket",
		"/usr/share/man/man1/webapp.1.gz",
		"/usr/share/doc/webapp/examples/webapp-notify-reload.conf",
	}
	debFiles = append([]string{
		"/etc/default/webapp",
		"/usr/share/doc/webapp/changelog.Debian.gz",
		"/usr/share/doc/webapp/copyright",
		"/usr/share/lintian/overrides/webapp",
	}, commonFiles...)
	// rpm -ql lists the directories a package owns, dpkg-deb --contents
	// every directory (they are checked apart).
	rpmFiles = append([]string{
		"/etc/sysconfig/webapp",
		"/etc/webapp",
		"/usr/share/doc/webapp",
		"/usr/share/doc/webapp/examples",
		"/usr/share/licenses/webapp",
		"/usr/share/licenses/webapp/LICENSE",
	}, commonFiles...)
)

func TestMaintainerScriptsShellcheck(t *testing.T) {
	t.Parallel()
	shellcheck := requireTool(t, "shellcheck")
	scripts, err := filepath.Glob("scripts/*/*")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no maintainer scripts under packaging/scripts: %v", err)
	}
	for _, s := range scripts {
		t.Run(s, func(t *testing.T) {
			b, err := os.ReadFile(s)
			if err != nil {
				t.Fatal(err)
			}
			if first, _, _ := strings.Cut(string(b), "\n"); first != "#!/bin/sh" {
				t.Errorf("%s starts with %q, want #!/bin/sh", s, first)
			}
			if out, err := run(t, "", nil, shellcheck, "--shell=sh", "--severity=style", s); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", s, err, out)
			}
		})
	}
}

func TestLintian(t *testing.T) {
	t.Parallel()
	lintian := requireTool(t, "lintian")
	p := defaultPackages(t)
	// --display-info shows the unused-override tag: every override must be needed.
	out, err := run(t, "", nil, lintian, "--fail-on", "error,warning", "--display-info", p.deb)
	out = dropLines(out, "running with root privileges is not recommended!")
	if err != nil {
		t.Fatalf("lintian --fail-on error,warning %s: %v\n%s", filepath.Base(p.deb), err, out)
	}
	for _, tag := range []string{"unused-override", "mismatched-override"} {
		if strings.Contains(out, tag) {
			t.Errorf("lintian reports %s: remove or fix the override in packaging/lintian-overrides\n%s", tag, out)
		}
	}
	t.Logf("lintian %s:\n%s", filepath.Base(p.deb), out)
}

func TestLintianOverridesAreDocumented(t *testing.T) {
	t.Parallel()
	requireCommentedEntries(t, "lintian-overrides", regexp.MustCompile(`^webapp: `))
}

func TestRpmlint(t *testing.T) {
	t.Parallel()
	rpmlint := requireTool(t, "rpmlint")
	cpio := requireTool(t, "cpio")
	p := defaultPackages(t)
	// rpmlint 2.4 unpacks the package with `rpm2cpio | cpio -id` in a
	// temporary directory, and GNU cpio writes absolute member names where
	// they point: nfpm names the files /usr/bin/webapp (rpmbuild names them
	// ./usr/bin/webapp), so they would land in the host's root, and rpmlint
	// would see none of them. A cpio first on PATH that adds
	// --no-absolute-filenames keeps them in rpmlint's directory; it leaves a
	// mark, so that an rpmlint that unpacks some other way is noticed.
	wrap := t.TempDir()
	mark := filepath.Join(wrap, "called")
	script := fmt.Sprintf("#!/bin/sh\n: >%q\nexec %q --no-absolute-filenames \"$@\"\n", mark, cpio)
	if err := os.WriteFile(filepath.Join(wrap, "cpio"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "", []string{"PATH=" + wrap + string(os.PathListSeparator) + os.Getenv("PATH")}, rpmlint, "--config", "rpmlint.toml", p.rpm)
	if _, statErr := os.Stat(mark); statErr != nil {
		t.Fatalf("rpmlint did not unpack %s with the cpio on PATH (%v): it may write the package's files into /; see TestRpmlint\n%s", filepath.Base(p.rpm), statErr, out)
	}
	if err != nil {
		t.Fatalf("rpmlint --config packaging/rpmlint.toml %s: %v\n%s", filepath.Base(p.rpm), err, out)
	}
	if !strings.Contains(out, " 0 errors, 0 warnings") {
		t.Errorf("rpmlint %s: want 0 errors, 0 warnings\n%s", filepath.Base(p.rpm), out)
	}
}

func TestRpmlintFiltersAreDocumented(t *testing.T) {
	t.Parallel()
	requireCommentedEntries(t, "rpmlint.toml", regexp.MustCompile(`^\s+'`))
}

// requireCommentedEntries checks that each line of file matching entry
// follows a comment (directly, or after other entries of one group).
func requireCommentedEntries(t *testing.T, file string, entry *regexp.Regexp) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n, commented := 0, false
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "#"):
			commented = true
		case entry.MatchString(line):
			n++
			if !commented {
				t.Errorf("%s: %q has no comment saying why", file, trimmed)
			}
		default:
			commented = false
		}
	}
	if n == 0 {
		t.Errorf("%s: no entries matching %v", file, entry)
	}
}

func TestChangelogHasVersion(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("changelog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^- semver: (\S+)$`).FindStringSubmatch(string(b))
	want := version(t) + "-1" // nfpm.yaml: release 1
	if m == nil || m[1] != want {
		t.Errorf("first entry of packaging/changelog.yaml = %v, want semver %s (add an entry for the VERSION file's version)", m, want)
	}
}

func TestUnitsVerify(t *testing.T) {
	t.Parallel()
	analyze := requireTool(t, "systemd-analyze")
	requireTool(t, "man")
	root := extractDeb(t, defaultPackages(t).deb)
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	copySystemUnits(t, unitDir)
	env := []string{"MANPATH=" + filepath.Join(root, "usr/share/man"), "SYSTEMD_LOG_COLOR=0"}

	units := []string{"webapp.socket", "webapp-https.socket", "webapp-grpc.socket", "webapp-udp.socket", "webapp-metrics.socket", "webapp.service"}
	// verify exits 0 on some errors (an unknown Type=): the output is what
	// counts. --root makes it check the packaged /usr/bin/webapp; MANPATH
	// lets it find the packaged webapp(1) for Documentation=.
	verify := func() (string, error) {
		return run(t, "", env, analyze, append([]string{"verify", "--root=" + root}, units...)...)
	}
	out, err := verify()
	if err != nil || out != "" {
		t.Errorf("systemd-analyze verify %s: err %v, output:\n%s\nwant no output", strings.Join(units, " "), err, out)
	}

	// The same check finds a broken unit, so an empty output means something.
	service := filepath.Join(unitDir, "webapp.service")
	b, err := os.ReadFile(service)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(b), "\nType=notify\n", "\nType=bogus\n", 1)
	if err := os.WriteFile(service, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := verify(); !strings.Contains(out, "bogus") {
		t.Errorf("systemd-analyze verify of a unit with Type=bogus: output %q, want an error about it", out)
	}
}

// copySystemUnits copies the host's systemd units (targets, slices, ...)
// into dir, so that `systemd-analyze verify --root` can load the
// dependencies of webapp's units.
func copySystemUnits(t testing.TB, dir string) {
	t.Helper()
	src := "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(src, "sysinit.target")); err != nil {
		src = "/lib/systemd/system"
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		// The host's own copies of webapp's units, if any, must not
		// replace the packaged ones.
		if strings.HasPrefix(e.Name(), "webapp.") || strings.HasPrefix(e.Name(), "webapp-") {
			continue
		}
		from, to := filepath.Join(src, e.Name()), filepath.Join(dir, e.Name())
		fi, err := os.Lstat(from)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, to); err != nil {
				t.Fatal(err)
			}
		case fi.IsDir():
			// .wants/.requires directories of the host: not needed.
		default:
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestServiceSecurity(t *testing.T) {
	t.Parallel()
	analyze := requireTool(t, "systemd-analyze")
	service := filepath.Join(repoRoot(t), "systemd/units/webapp.service")
	out, err := run(t, "", []string{"SYSTEMD_LOG_COLOR=0"}, analyze, "security", "--offline=true", "--no-pager", service)
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true webapp.service: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for webapp\.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: no overall exposure level in:\n%s", out)
	}
	exposure, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	if exposure > maxExposure {
		t.Errorf("systemd-analyze security webapp.service: exposure %.1f, want <= %.1f\n%s", exposure, maxExposure, out)
	}
	t.Logf("exposure level of webapp.service: %.1f", exposure)
}

// TestServiceSettings pins what serving, reloading and draining need, so
// that hardening cannot take it away.
func TestServiceSettings(t *testing.T) {
	t.Parallel()
	settings := unitSettings(t, filepath.Join(repoRoot(t), "systemd/units/webapp.service"))
	want := map[string][]string{
		"Service.Type":         {"notify"},
		"Service.NotifyAccess": {"all"},
		// systemd does not pass TimeoutStopSec= to the service.
		"Service.ExecStart":         {"/usr/bin/webapp serve --stop-timeout=30s $WEBAPP_OPTS"},
		"Service.SuccessExitStatus": {"3"},
		// "+": as root, to read the root-only /etc/webapp/tls.key.
		"Service.ExecReload":       {"+/usr/bin/webapp reload"},
		"Service.LoadCredential":   {"tls:/etc/webapp"},
		"Service.SetCredential":    {"tls:unused"},
		"Service.EnvironmentFile":  {"-/etc/default/webapp", "-/etc/sysconfig/webapp"},
		"Service.RuntimeDirectory": {"webapp"},
		"Service.TimeoutStopSec":   {"30s"},
		"Service.TimeoutStartSec":  {"60s"},
		"Service.KillMode":         {"control-group"},
		"Service.Restart":          {"on-failure"},
		"Install.Also":             {"webapp.socket"},
		"Unit.Requires":            {"webapp.socket"},
	}
	for key, values := range want {
		if got := settings[key]; !slices.Equal(got, values) {
			t.Errorf("webapp.service %s = %q, want %q", key, got, values)
		}
	}
	// Sockets= would also mean Wants=: every listed socket would start with
	// the service, enabled or not.
	for _, key := range []string{"Service.WatchdogSec", "Service.RuntimeDirectoryPreserve", "Service.NoExecPaths", "Service.ExecPaths", "Service.Sockets"} {
		if got, ok := settings[key]; ok {
			t.Errorf("webapp.service sets %s=%q, want it unset", key, got)
		}
	}
	// AF_UNIX carries sd_notify and the control socket.
	if got := settings["Service.RestrictAddressFamilies"]; len(got) > 0 && !slices.ContainsFunc(got, func(v string) bool {
		return !strings.HasPrefix(v, "~") && strings.Contains(v, "AF_UNIX")
	}) {
		t.Errorf("webapp.service RestrictAddressFamilies = %q, want AF_UNIX allowed", got)
	}

}

// TestSocketSettings pins each socket unit's name, address and install
// section: webapp asks for its sockets by name, and enabling an optional
// socket makes webapp.service want it, so that a restart of the service
// starts it (see webapp(1)).
func TestSocketSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		unit, listen, address, name, service, wantedBy string
	}{
		{"webapp.socket", "ListenStream", "127.0.0.1:8080", "http", "", "sockets.target"},
		{"webapp-https.socket", "ListenStream", "127.0.0.1:8443", "https", "webapp.service", "sockets.target webapp.service"},
		{"webapp-grpc.socket", "ListenStream", "127.0.0.1:9090", "grpc", "webapp.service", "sockets.target webapp.service"},
		{"webapp-metrics.socket", "ListenStream", "127.0.0.1:9100", "metrics", "webapp.service", "sockets.target webapp.service"},
		{"webapp-udp.socket", "ListenDatagram", "127.0.0.1:8125", "udp", "webapp.service", "sockets.target webapp.service"},
	}
	for _, tt := range tests {
		settings := unitSettings(t, filepath.Join(repoRoot(t), "systemd/units", tt.unit))
		want := map[string][]string{
			"Socket." + tt.listen:       {tt.address},
			"Socket.FileDescriptorName": {tt.name},
			"Install.WantedBy":          {tt.wantedBy},
			"Unit.Documentation":        {"man:webapp(1)"},
		}
		if tt.service != "" {
			want["Socket.Service"] = []string{tt.service}
		}
		for key, values := range want {
			if got := settings[key]; !slices.Equal(got, values) {
				t.Errorf("%s %s = %q, want %q", tt.unit, key, got, values)
			}
		}
		for key := range settings {
			if strings.HasPrefix(key, "Socket.Listen") && key != "Socket."+tt.listen {
				t.Errorf("%s sets %s=%q, want only %s=", tt.unit, key, settings[key], tt.listen)
			}
		}
	}
}

// unitSettings reads a unit file into "Section.Key" -> values.
func unitSettings(t testing.TB, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: line %q is not key=value", path, line)
			}
			settings[section+"."+k] = append(settings[section+"."+k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return settings
}

func TestReproducible(t *testing.T) {
	t.Parallel()
	v := version(t)
	first := defaultPackages(t)
	second := build(t, "again", v)
	for _, pair := range [][2]string{{first.deb, second.deb}, {first.rpm, second.rpm}} {
		a, err := os.ReadFile(pair[0])
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(pair[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two builds of one commit differ (%d and %d bytes)", filepath.Base(pair[0]), len(a), len(b))
		}
	}
}

func TestDebContents(t *testing.T) {
	t.Parallel()
	requireTool(t, "dpkg-deb")
	p := defaultPackages(t)

	listing := mustRun(t, "", nil, "dpkg-deb", "--contents", p.deb)
	var files []string
	etcWebapp := ""
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 6 && fields[5] == "./etc/webapp/" {
			etcWebapp = fields[0] + " " + fields[1]
		}
		if len(fields) < 6 || strings.HasPrefix(fields[0], "d") {
			continue
		}
		files = append(files, strings.TrimPrefix(fields[5], "."))
		if name := strings.TrimPrefix(fields[5], "."); name == "/usr/bin/webapp" {
			if fields[0] != "-rwxr-xr-x" {
				t.Errorf("%s mode %s, want -rwxr-xr-x", name, fields[0])
			}
		} else if fields[0] != "-rw-r--r--" {
			t.Errorf("%s mode %s, want -rw-r--r--", name, fields[0])
		}
	}
	slices.Sort(files)
	want := slices.Sorted(slices.Values(debFiles))
	if !slices.Equal(files, want) {
		t.Errorf("dpkg-deb --contents: files\n%s\nwant\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}
	// Where the administrator puts the TLS certificate and key.
	if etcWebapp != "drwxr-xr-x root/root" {
		t.Errorf("dpkg-deb --contents: /etc/webapp/ is %q, want drwxr-xr-x root/root", etcWebapp)
	}

	if got := strings.TrimSpace(mustRun(t, "", nil, "dpkg-deb", "--field", p.deb, "Version")); got != version(t)+"-1" {
		t.Errorf("deb Version = %q, want %s-1", got, version(t))
	}

	control := t.TempDir()
	mustRun(t, "", nil, "dpkg-deb", "--control", p.deb, control)
	conffiles, err := os.ReadFile(filepath.Join(control, "conffiles"))
	if err != nil {
		t.Fatalf("deb has no conffiles: %v", err)
	}
	if got := strings.Fields(string(conffiles)); !slices.Equal(got, []string{"/etc/default/webapp"}) {
		t.Errorf("deb conffiles = %q, want /etc/default/webapp", got)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		got, err := os.ReadFile(filepath.Join(control, s))
		if err != nil {
			t.Errorf("deb has no %s: %v", s, err)
			continue
		}
		want, err := os.ReadFile(filepath.Join("scripts/deb", s))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deb %s differs from packaging/scripts/deb/%s", s, s)
		}
	}
	if _, err := os.Stat(filepath.Join(control, "preinst")); err == nil {
		t.Errorf("deb has a preinst, want none")
	}
}

func TestRpmContents(t *testing.T) {
	t.Parallel()
	rpm := requireTool(t, "rpm")
	p := defaultPackages(t)

	files := strings.Fields(mustRun(t, "", nil, rpm, "-qlp", p.rpm))
	slices.Sort(files)
	want := slices.Sorted(slices.Values(rpmFiles))
	if !slices.Equal(files, want) {
		t.Errorf("rpm -qlp: files\n%s\nwant\n%s", strings.Join(files, "\n"), strings.Join(want, "\n"))
	}

	// FILEFLAGS: c = %config, n = noreplace, d = %doc, l = %license.
	flags := map[string]string{}
	modes := map[string]string{}
	out := mustRun(t, "", nil, rpm, "-qp", "--qf", `[%{FILENAMES} %{FILEFLAGS:fflags}- %{FILEMODES:perms}\n]`, p.rpm)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("rpm --qf: unexpected line %q", line)
		}
		flags[f[0]], modes[f[0]] = strings.TrimSuffix(f[1], "-"), f[2]
	}
	wantFlags := map[string]string{
		"/etc/sysconfig/webapp":              "cn",
		"/usr/share/man/man1/webapp.1.gz":    "d",
		"/usr/share/licenses/webapp/LICENSE": "l",
		"/usr/bin/webapp":                    "",
	}
	for f, want := range wantFlags {
		if flags[f] != want {
			t.Errorf("rpm file flags of %s = %q, want %q", f, flags[f], want)
		}
	}
	for f, mode := range modes {
		want := "-rw-r--r--"
		switch f {
		case "/usr/bin/webapp":
			want = "-rwxr-xr-x"
		case "/usr/share/licenses/webapp", "/usr/share/doc/webapp", "/usr/share/doc/webapp/examples", // owned, so that rpm -e removes them
			"/etc/webapp": // for the TLS certificate and key
			want = "drwxr-xr-x"
		}
		if mode != want {
			t.Errorf("rpm mode of %s = %s, want %s", f, mode, want)
		}
	}
	if got := strings.Fields(mustRun(t, "", nil, rpm, "-qp", "--configfiles", p.rpm)); !slices.Equal(got, []string{"/etc/sysconfig/webapp"}) {
		t.Errorf("rpm --configfiles = %q, want /etc/sysconfig/webapp", got)
	}

	if got := mustRun(t, "", nil, rpm, "-qp", "--qf", "%{VERSION}-%{RELEASE}", p.rpm); got != version(t)+"-1" {
		t.Errorf("rpm version-release = %q, want %s-1", got, version(t))
	}

	// Each scriptlet is the checked-in script, run by /bin/sh.
	scriptlets := map[string]string{
		"POSTIN":    "post",
		"PREUN":     "preun",
		"POSTUN":    "postun",
		"POSTTRANS": "posttrans",
	}
	for tag, file := range scriptlets {
		want, err := os.ReadFile(filepath.Join("scripts/rpm", file))
		if err != nil {
			t.Fatal(err)
		}
		got := mustRun(t, "", nil, rpm, "-qp", "--qf", "%{"+tag+"PROG}\n%{"+tag+"}", p.rpm)
		prog, body, _ := strings.Cut(got, "\n")
		if prog != "/bin/sh" {
			t.Errorf("rpm %%%s interpreter = %q, want /bin/sh", strings.ToLower(tag), prog)
		}
		if strings.TrimSpace(body) != strings.TrimSpace(string(want)) {
			t.Errorf("rpm %s scriptlet differs from packaging/scripts/rpm/%s:\n%s", tag, file, body)
		}
	}
	if got := mustRun(t, "", nil, rpm, "-qp", "--qf", "%{PREIN}", p.rpm); got != "(none)" {
		t.Errorf("rpm has a %%pre scriptlet %q, want none", got)
	}
}

func TestPackagedBinaryVersion(t *testing.T) {
	t.Parallel()
	root := extractDeb(t, defaultPackages(t).deb)
	out := mustRun(t, "", nil, filepath.Join(root, "usr/bin/webapp"), "version", "--short")
	if got := strings.TrimSpace(out); got != version(t) {
		t.Errorf("webapp version = %q, want %q", got, version(t))
	}
	// The long form names the commit the package is built from.
	head, err := run(t, repoRoot(t), nil, "git", "rev-parse", "--short=12", "HEAD")
	if err != nil {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatalf("CI=true but no git commit to compare with: %v", err)
		}
		t.Skipf("no git commit to compare with (run from a git checkout): %v", err)
	}
	long := mustRun(t, "", nil, filepath.Join(root, "usr/bin/webapp"), "version")
	if want := "webapp " + version(t) + " (commit " + strings.TrimSpace(head); !strings.HasPrefix(long, want) {
		t.Errorf("webapp version = %q, want it to begin %q", long, want)
	}
}

func TestBuildVersionOverride(t *testing.T) {
	t.Parallel()
	requireTool(t, "dpkg-deb")
	const v = "9.8.7-rc.1"
	p := build(t, "override", v)
	if got := strings.TrimSpace(mustRun(t, "", nil, "dpkg-deb", "--field", p.deb, "Version")); got != "9.8.7~rc.1-1" {
		t.Errorf("deb Version built with VERSION=%s = %q, want 9.8.7~rc.1-1 (sorts before 9.8.7)", v, got)
	}
	root := extractDeb(t, p.deb)
	if got := strings.TrimSpace(mustRun(t, "", nil, filepath.Join(root, "usr/bin/webapp"), "version", "--short")); got != v {
		t.Errorf("webapp version built with VERSION=%s = %q", v, got)
	}
}

// TestDebScriptsOfflineRoot runs the deb maintainer scripts the way dpkg
// does for an offline root (DPKG_ROOT): deb-systemd-helper enables,
// masks and purges inside that root, and nothing touches systemd. Only
// webapp.socket is enabled on install; an optional socket the
// administrator enabled stays enabled across an upgrade, and a purge
// removes its symlinks too.
func TestDebScriptsOfflineRoot(t *testing.T) {
	t.Parallel()
	requireTool(t, "deb-systemd-helper")
	systemctl := requireTool(t, "systemctl")
	root := extractDeb(t, defaultPackages(t).deb)
	hostLink := "/etc/systemd/system/sockets.target.wants/webapp.socket"
	_, hostErr := os.Lstat(hostLink)

	script := func(name string, args ...string) {
		t.Helper()
		env := []string{"DPKG_ROOT=" + root, "DPKG_MAINTSCRIPT_PACKAGE=webapp", "DPKG_MAINTSCRIPT_NAME=" + name}
		out, err := run(t, "", env, "/bin/sh", append([]string{filepath.Join("scripts/deb", name)}, args...)...)
		if err != nil || out != "" {
			t.Fatalf("%s %s: err %v, output %q; want success and no output", name, strings.Join(args, " "), err, out)
		}
	}
	enableLink := filepath.Join(root, hostLink)
	maskLink := filepath.Join(root, "etc/systemd/system/webapp.socket")
	// The symlinks `systemctl enable webapp-grpc.socket` makes.
	grpcLinks := []string{
		filepath.Join(root, "etc/systemd/system/sockets.target.wants/webapp-grpc.socket"),
		filepath.Join(root, "etc/systemd/system/webapp.service.wants/webapp-grpc.socket"),
	}
	optionalLinks := func() []string {
		var found []string
		for _, u := range []string{"webapp-https.socket", "webapp-grpc.socket", "webapp-udp.socket", "webapp-metrics.socket"} {
			for _, dir := range []string{"sockets.target.wants", "webapp.service.wants"} {
				if l := filepath.Join(root, "etc/systemd/system", dir, u); linkTo(l) != "" {
					found = append(found, l)
				}
			}
		}
		return found
	}

	script("postinst", "configure", "")
	if got := linkTo(enableLink); got != "/usr/lib/systemd/system/webapp.socket" {
		t.Errorf("after install: %s -> %q, want the socket enabled", hostLink, got)
	}
	if found := optionalLinks(); len(found) != 0 {
		t.Errorf("after install: optional sockets enabled: %v, want none", found)
	}
	// The administrator turns the gRPC socket on.
	mustRun(t, "", nil, systemctl, "--root="+root, "enable", "webapp-grpc.socket")
	for _, l := range grpcLinks {
		if linkTo(l) == "" {
			t.Fatalf("systemctl --root enable webapp-grpc.socket made no %s", l)
		}
	}
	script("postinst", "configure", version(t)+"-1")
	if got := linkTo(enableLink); got == "" {
		t.Errorf("after upgrade: webapp.socket is no longer enabled")
	}
	if found := optionalLinks(); !slices.Equal(found, grpcLinks) {
		t.Errorf("after upgrade: optional sockets enabled: %v, want only the administrator's webapp-grpc.socket %v", found, grpcLinks)
	}
	script("prerm", "remove")
	units, err := filepath.Glob(filepath.Join(root, "usr/lib/systemd/system/webapp*"))
	if err != nil || len(units) != 6 {
		t.Fatalf("unit files in the package: %v (%v), want 6", units, err)
	}
	for _, u := range units { // dpkg removes the files before postrm
		if err := os.Remove(u); err != nil {
			t.Fatal(err)
		}
	}
	script("postrm", "remove")
	if got := linkTo(maskLink); got != "/dev/null" {
		t.Errorf("after remove: webapp.socket -> %q, want masked until purge", got)
	}
	script("postrm", "purge")
	for _, p := range append([]string{enableLink, maskLink, filepath.Join(root, "var/lib/systemd/deb-systemd-helper-enabled")}, grpcLinks...) {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after purge: %s still exists (%v)", p, err)
		}
	}
	if _, err := os.Lstat(hostLink); (err == nil) != (hostErr == nil) {
		t.Errorf("the scripts changed the host's %s", hostLink)
	}
}

// linkTo is the target of the symbolic link path, "" if it is none.
func linkTo(path string) string {
	target, err := os.Readlink(path)
	if err != nil {
		return ""
	}
	return target
}

// dropLines removes the lines equal to line from out.
func dropLines(out, line string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(out, "\n") {
		if strings.TrimRight(l, "\n") != line {
			io.WriteString(&b, l)
		}
	}
	return b.String()
}

// TestLicenseAgrees: the module's LICENSE, the licence the packages
// declare and Debian's copyright file name the same licence, and the rpm
// installs the module's LICENSE.
func TestLicenseAgrees(t *testing.T) {
	t.Parallel()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(repoRoot(t), name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if l := strings.Fields(read("LICENSE")); !slices.Equal(l[:min(len(l), 4)], []string{"Apache", "License", "Version", "2.0,"}) {
		t.Errorf("LICENSE begins %q, want the Apache License, Version 2.0", l[:min(len(l), 4)])
	}
	const spdx = "Apache-2.0"
	nfpm := read("packaging/nfpm.yaml")
	if !regexp.MustCompile(`(?m)^license: ` + spdx + `$`).MatchString(nfpm) {
		t.Errorf("nfpm.yaml does not declare license: %s", spdx)
	}
	if !regexp.MustCompile(`(?m)^  - src: LICENSE\n    dst: /usr/share/licenses/webapp/LICENSE$`).MatchString(nfpm) {
		t.Errorf("nfpm.yaml does not install the module's LICENSE as /usr/share/licenses/webapp/LICENSE")
	}
	copyright := read("packaging/copyright")
	for _, want := range []string{"Files: *\nCopyright: 2026 The baton authors\nLicense: " + spdx + "\n", "\nLicense: " + spdx + "\n Licensed under the Apache License, Version 2.0"} {
		if !strings.Contains(copyright, want) {
			t.Errorf("packaging/copyright lacks %q", want)
		}
	}
}
