package systemdtest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Systemd names a systemd a box can boot: the host's own, or the one of a
// Debian root file system built by DebianRoot. Its Name ("systemd252",
// "systemd257") is meant for subtest names.
type Systemd struct {
	// Name is "systemd" followed by the major version, e.g. "systemd257".
	Name string
	// Root is the box's lower layer: "" for the host's root, else a
	// directory built by DebianRoot.
	Root string

	err error // why Root could not be built
}

// Require applies the project's policy to a test that needs this systemd:
// if its root could not be built, it fails the test when CI is true and
// otherwise skips it with one line saying why.
func (sd Systemd) Require(t testing.TB) {
	t.Helper()
	requireWith(t, sd.err)
}

// Trixie is Debian 13, whose systemd is 257.
const Trixie = "trixie"

// debianPackages are installed into a Debian root on top of the minbase
// variant (essential packages and apt): systemd as PID 1, dbus for
// systemctl's bus calls, the tools the e2e tests run inside a box (ss from
// iproute2, ps from procps, python3 for scripted test services; util-linux
// is essential) and lintian, which checks the project's .deb with the
// suite's own rules.
var debianPackages = []string{"systemd", "systemd-sysv", "dbus", "iproute2", "procps", "python3", "lintian"}

const (
	// debianBuildTimeout bounds one mmdebstrap run (about a minute here).
	debianBuildTimeout = 6 * time.Minute
	// debianRootFormat changes when the way a root is built changes, so
	// that an old cache is not reused.
	debianRootFormat = "1"
	// debianDoneFile marks a complete root.
	debianDoneFile = "etc/baton-debian-root"
)

// DebianRootDir is where DebianRoot caches the roots it builds, one
// directory per suite and package set: baton-<suite>-<hash> here.
const DebianRootDir = "/var/tmp"

var (
	debianMu    sync.Mutex
	debianRoots = map[string]debianResult{}
)

type debianResult struct {
	dir string
	err error
}

// DebianRoot returns a root file system of the Debian suite (e.g. Trixie)
// for Options.Root, building it with mmdebstrap on first use and caching it
// under DebianRootDir as baton-<suite>-<hash>, where the hash covers the
// suite, the mirror, the package list and the build recipe. Building takes
// about a minute; an flock on the directory's .lock file makes concurrent
// test processes wait for one build rather than race. mmdebstrap is
// installed with apt-get if it is missing. The mirror is the first Debian
// URI of the machine's own apt sources (BATON_DEBIAN_MIRROR overrides it);
// mmdebstrap uses it through its own temporary apt configuration, so the
// machine's sources are never changed. The outcome is remembered for the
// life of the process.
func DebianRoot(suite string) (string, error) {
	debianMu.Lock()
	defer debianMu.Unlock()
	if r, ok := debianRoots[suite]; ok {
		return r.dir, r.err
	}
	dir, err := debianRoot(suite)
	debianRoots[suite] = debianResult{dir, err}
	return dir, err
}

// Versions returns the systemd versions the end-to-end tests run on: the
// host's and Debian 13's (built by DebianRoot on first use). It applies
// Require's policy first. Where the Debian root cannot be built, the
// Debian entry says why through its Require, so that a subtest for it
// fails under CI=true and skips otherwise while the host's still runs.
func Versions(t testing.TB) []Systemd {
	t.Helper()
	Require(t)
	host := Systemd{Name: "systemd" + hostSystemdMajor()}
	trixie := Systemd{Name: "systemd257"}
	trixie.Root, trixie.err = DebianRoot(Trixie)
	if trixie.err != nil {
		trixie.err = fmt.Errorf("the Debian %s root for the box cannot be built: %w", Trixie, trixie.err)
	}
	return []Systemd{host, trixie}
}

// hostSystemdMajor is the major version of the host's systemd ("252").
var hostSystemdMajor = sync.OnceValue(func() string {
	out, err := exec.Command("/lib/systemd/systemd", "--version").Output()
	if err != nil {
		return "unknown"
	}
	if v, ok := parseSystemdVersion(string(out)); ok {
		return v
	}
	return "unknown"
})

// parseSystemdVersion reads the major version from the first line of
// `systemctl --version` or `systemd --version`: "systemd 257 (257.13-1)".
func parseSystemdVersion(out string) (string, bool) {
	first, _, _ := strings.Cut(out, "\n")
	f := strings.Fields(first)
	if len(f) < 2 || f[0] != "systemd" {
		return "", false
	}
	v := f[1]
	for _, c := range v {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return v, v != ""
}

func debianRoot(suite string) (string, error) {
	if os.Geteuid() != 0 {
		return "", errors.New("building a Debian root needs root")
	}
	mirror, err := debianMirror()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(strings.Join(append([]string{debianRootFormat, suite, mirror}, debianPackages...), "\n")))
	dir := filepath.Join(DebianRootDir, "baton-"+suite+"-"+hex.EncodeToString(sum[:6]))
	if done(dir) {
		return dir, nil
	}
	lockPath := dir + ".lock"
	lf, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return "", err
	}
	lf.Close()
	lock, err := lockDir(lockPath, true)
	if err != nil {
		return "", fmt.Errorf("lock %s: %w", lockPath, err)
	}
	defer lock.Close()
	if done(dir) { // another process built it while we waited
		return dir, nil
	}
	if err := ensureMmdebstrap(); err != nil {
		return "", err
	}
	// A half-built root of a killed build, or of a failed one.
	tmp := dir + ".build"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), debianBuildTimeout)
	defer cancel()
	args := []string{"--variant=minbase", "--mode=root", "--quiet",
		"--include=" + strings.Join(debianPackages, ","),
		// Documentation other than copyright files is not used in a box.
		"--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--customize-hook=echo " + suite + " > \"$1/" + debianDoneFile + "\"",
		suite, tmp, mirror}
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Env = []string{"PATH=" + boxPATH, "LANG=C.UTF-8", "TMPDIR=/var/tmp"}
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("mmdebstrap %s: %w (after %v)\n%s", strings.Join(args, " "), err, time.Since(start).Round(time.Second), tail(string(out), 30))
	}
	if !done(tmp) {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("mmdebstrap %s succeeded but the root has no %s", suite, debianDoneFile)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, nil
}

func done(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, debianDoneFile))
	return err == nil
}

// debianMirror returns BATON_DEBIAN_MIRROR, else the first URI of a
// Debian archive (not its security archive) in the machine's apt sources.
func debianMirror() (string, error) {
	if m := os.Getenv("BATON_DEBIAN_MIRROR"); m != "" {
		return m, nil
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, "/etc/apt/sources.list")
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	files = append(files, more...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if m := mirrorIn(string(b), strings.HasSuffix(f, ".sources")); m != "" {
			return m, nil
		}
	}
	return "", errors.New("no Debian archive in /etc/apt/sources.list*; set BATON_DEBIAN_MIRROR")
}

// mirrorIn returns the first Debian archive URI of an apt sources file in
// deb822 form (deb822) or one-line form.
func mirrorIn(text string, deb822 bool) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		var uris []string
		if deb822 {
			if v, ok := strings.CutPrefix(line, "URIs:"); ok {
				uris = strings.Fields(v)
			}
		} else if f := strings.Fields(line); len(f) >= 3 && f[0] == "deb" {
			for _, w := range f[1:] {
				if !strings.HasPrefix(w, "[") && !strings.HasSuffix(w, "]") {
					uris = append(uris, w)
					break
				}
			}
		}
		for _, u := range uris {
			u = strings.TrimSuffix(u, "/")
			if strings.HasSuffix(u, "/debian") {
				return u
			}
		}
	}
	return ""
}

// ensureMmdebstrap installs mmdebstrap with apt-get if it is missing.
func ensureMmdebstrap() error {
	if _, err := exec.LookPath("mmdebstrap"); err == nil {
		return nil
	}
	if _, err := aptGet("install", "-y", "--no-install-recommends", "mmdebstrap"); err != nil {
		out, uerr := aptGet("update")
		if uerr != nil {
			return fmt.Errorf("install mmdebstrap: %w; apt-get update: %w\n%s", err, uerr, tail(out, 20))
		}
		if out, err := aptGet("install", "-y", "--no-install-recommends", "mmdebstrap"); err != nil {
			return fmt.Errorf("install mmdebstrap: %w\n%s", err, tail(out, 20))
		}
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return fmt.Errorf("mmdebstrap installed but not found: %w", err)
	}
	return nil
}
