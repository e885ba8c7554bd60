package systemdtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Require applies the project's policy to a test that needs a box; Boot
// calls it first. Where a box cannot be booted (not Linux, not root,
// systemd-nspawn missing and not installable, ...), it fails the test when
// the environment variable CI is true, and otherwise skips it with one line
// saying why and how to run it.
func Require(t testing.TB) {
	t.Helper()
	requireWith(t, canBoot())
}

// requireWith applies the policy to err, the reason a box cannot be booted
// (nil if it can).
func requireWith(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if inCI() {
		t.Fatalf("systemdtest: CI=true but a systemd sandbox cannot be booted: %v", err)
	}
	t.Skipf("systemdtest: %v; run `sudo make test`", err)
}

// inCI reports whether the environment variable CI is set to true.
func inCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

func canBoot() error {
	if runtime.GOOS != "linux" {
		return errors.New("a systemd sandbox needs Linux")
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root to boot a systemd sandbox")
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		return fmt.Errorf("systemd is not installed (%w)", err)
	}
	for _, tool := range []string{"nsenter", "setpriv", "findmnt", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("util-linux tool missing: %w", err)
		}
	}
	if _, err := cgroupRoots(); err != nil {
		return err
	}
	return EnsureNspawn()
}

// ensureNspawn runs the check and the install once per process.
var ensureNspawn = sync.OnceValue(installNspawn)

// EnsureNspawn makes sure systemd-nspawn can run. If it is missing and the
// process runs as root, it installs the Debian package systemd-container
// with apt-get (running apt-get update and trying again if that fails).
// The outcome is remembered for the life of the process.
func EnsureNspawn() error { return ensureNspawn() }

func installNspawn() error {
	if nspawnWorks() {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("systemd-nspawn is missing (Debian package systemd-container) and installing it needs root")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("systemd-nspawn is missing and apt-get is not available: %w", err)
	}
	out, err := aptGet("install", "-y", "--no-install-recommends", "systemd-container")
	if err != nil {
		if uout, uerr := aptGet("update"); uerr != nil {
			return fmt.Errorf("install systemd-container: %w\n%s\napt-get update: %w\n%s", err, tail(out, 20), uerr, tail(uout, 20))
		}
		if out, err = aptGet("install", "-y", "--no-install-recommends", "systemd-container"); err != nil {
			return fmt.Errorf("install systemd-container: %w\n%s", err, tail(out, 20))
		}
	}
	if !nspawnWorks() {
		return errors.New("systemd-container installed but systemd-nspawn --version fails")
	}
	return nil
}

func nspawnWorks() bool {
	p, err := exec.LookPath("systemd-nspawn")
	return err == nil && exec.Command(p, "--version").Run() == nil
}

// aptGet runs apt-get non-interactively, waiting for the dpkg lock if
// another process holds it.
func aptGet(args ...string) (string, error) {
	cmd := exec.Command("apt-get", append([]string{"-q", "-o", "DPkg::Lock::Timeout=300"}, args...)...)
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
