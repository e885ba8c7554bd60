package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
	"github.com/baton-dev/baton/systemd/systemdtest"
)

// editedOpts is the administrator's edit of the environment file between
// v1 and v2. The value must stay valid options of `webapp serve`: the
// running service was started with it.
const editedOpts = "--idle-grace=2s"

// editEnvFile replaces the packaged environment file with a locally edited
// one and returns its content.
func editEnvFile(t *testing.T, p *pkgBox, name string) string {
	t.Helper()
	orig := string(p.box.ReadFile(t, name))
	edited := orig + "# local edit\nWEBAPP_OPTS=\"" + editedOpts + "\"\n"
	p.box.WriteFile(t, name, []byte(edited), 0o644)
	return edited
}

// firstRequest checks the state right after a fresh install, before any
// connection: the socket enabled and listening, the service not started;
// then that one request starts the service, which reads the edited
// environment file.
func firstRequest(t *testing.T, p *pkgBox, version string) {
	t.Helper()
	st := p.state(t)
	if st.socket["UnitFileState"] != "enabled" || st.socket["SubState"] != "listening" {
		t.Fatalf("after install webapp.socket is %v, want enabled and listening\n%s", st.socket, p.journal(t))
	}
	if !p.exists(t, "/etc/systemd/system/sockets.target.wants/webapp.socket") {
		t.Errorf("no enable symlink sockets.target.wants/webapp.socket")
	}
	if st.service["ActiveState"] != "inactive" {
		t.Errorf("after install webapp.service is %v, want inactive until the first connection", st.service)
	}
	if fi, err := os.Stat(filepath.Join(p.box.Root(), "/etc/webapp")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("after install /etc/webapp: %v %v, want a directory with mode 0755", fi, err)
	}
	p.optionalOff(t, "after install")
	v, pid := p.get(t)
	if v != version {
		t.Errorf("the first answer comes from version %q, want %s", v, version)
	}
	st = p.state(t)
	if st.service["ActiveState"] != "active" || st.service["MainPID"] != pid {
		t.Errorf("after the first request webapp.service is %v, answer from pid %s; want active with that MainPID", st.service, pid)
	}
	if cl := p.cmdline(t, pid); !strings.HasSuffix(cl, " "+editedOpts) {
		t.Errorf("webapp runs as %q, want the edited WEBAPP_OPTS %q", cl, editedOpts)
	}
	p.optionalOff(t, "after the first request")
}

// upgradeSequence upgrades and downgrades under load, each direction once
// with kept-alive connections and once with a new connection per request.
func upgradeSequence(t *testing.T, p *pkgBox, up, down []string, afterFirst func(t *testing.T)) {
	steps := []struct {
		name     string
		mode     load.Mode
		from, to string
		cmd      []string
	}{
		{"upgrade-keepalive", load.KeepAlive, pkgV1, pkgV2, up},
		{"downgrade-newconn", load.NewConnection, pkgV2, pkgV1, down},
		{"upgrade-newconn", load.NewConnection, pkgV1, pkgV2, up},
		{"downgrade-keepalive", load.KeepAlive, pkgV2, pkgV1, down},
	}
	for i, s := range steps {
		if !t.Run(s.name, func(t *testing.T) {
			p.changeUnderLoad(t, s.mode, s.from, s.to, s.cmd...)
			if i == 0 {
				afterFirst(t)
			}
		}) {
			return
		}
	}
}

// usrDirs are where the packages install under /usr.
var usrDirs = []string{"/usr/bin", "/usr/lib/systemd", "/usr/share/doc", "/usr/share/man/man1", "/usr/share/lintian/overrides", "/usr/share/licenses"}

// TestPackageDeb installs, upgrades, downgrades, removes and purges the deb
// under the box's systemd, the upgrades under load.
func TestPackageDeb(t *testing.T) { onEachSystemd(t, testPackageDeb) }

func testPackageDeb(t *testing.T, sd systemdtest.Systemd) {
	systemdtest.Require(t)
	needTool(t, "dpkg")
	needTool(t, "deb-systemd-helper")
	deb1 := buildPackage(t, "deb", pkgV1)
	deb2 := buildPackage(t, "deb", pkgV2)
	p := bootPackageBox(t, sd)
	deb1, deb2 = p.copyPackage(t, deb1), p.copyPackage(t, deb2)
	var edited string

	if sd.Root != "" {
		// The Debian root has its release's lintian: the package must be
		// clean by that release's rules too, with every override needed.
		t.Run("lintian", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			version, _, _ := p.box.Exec(ctx, "lintian", "--version")
			out, stderr, err := p.box.Exec(ctx, "lintian", "--fail-on", "error,warning", "--display-info", deb2)
			out += stderr
			if err != nil {
				t.Fatalf("%s: lintian --fail-on error,warning: %v\n%s", strings.TrimSpace(version), err, out)
			}
			for _, tag := range []string{"unused-override", "mismatched-override"} {
				if strings.Contains(out, tag) {
					t.Errorf("%s reports %s: fix packaging/lintian-overrides\n%s", strings.TrimSpace(version), tag, out)
				}
			}
			t.Logf("%s on %s:\n%s", strings.TrimSpace(version), deb2, out)
		})
	}

	if !t.Run("install", func(t *testing.T) {
		p.run(t, "dpkg", "-i", deb1)
		edited = editEnvFile(t, p, "/etc/default/webapp")
		firstRequest(t, p, pkgV1)
	}) {
		return
	}

	upgradeSequence(t, p, []string{"dpkg", "-i", deb2}, []string{"dpkg", "-i", deb1}, func(t *testing.T) {
		if got := string(p.box.ReadFile(t, "/etc/default/webapp")); got != edited {
			t.Errorf("the upgrade changed the edited /etc/default/webapp:\n%s", got)
		}
		if found := p.leftovers(t, "/etc/default"); len(found) != 1 {
			t.Errorf("files in /etc/default after the upgrade: %v, want only webapp", found)
		}
		pid := p.state(t).service["MainPID"]
		if cl := p.cmdline(t, pid); !strings.HasSuffix(cl, " "+editedOpts) {
			t.Errorf("after the upgrade webapp runs as %q, want the edited WEBAPP_OPTS %q", cl, editedOpts)
		}
		p.optionalOff(t, "after the upgrade")
	})

	t.Run("remove", func(t *testing.T) {
		p.run(t, "dpkg", "-r", "webapp")
		for _, u := range webappUnits {
			st := p.box.Show(t, u, "ActiveState", "UnitFileState", "LoadState")
			if st["ActiveState"] != "inactive" || st["UnitFileState"] == "enabled" {
				t.Errorf("after dpkg -r %s is %v, want inactive and not enabled", u, st)
			}
			code, out := p.try(t, "systemctl", "is-enabled", u)
			if code == 0 {
				t.Errorf("after dpkg -r systemctl is-enabled %s: %s, want a non-zero exit", u, out)
			}
			t.Logf("after dpkg -r: %s %v, is-enabled: %s", u, st, strings.TrimSpace(out))
		}
		if !p.refused(t) {
			t.Errorf("after dpkg -r the port still accepts connections")
		}
		if !p.exists(t, "/etc/default/webapp") {
			t.Errorf("dpkg -r removed the configuration file /etc/default/webapp, which only a purge removes")
		}
	})

	t.Run("purge", func(t *testing.T) {
		p.run(t, "dpkg", "-P", "webapp")
		if code, out := p.try(t, "dpkg-query", "-W", "-f=${Status}", "webapp"); code == 0 && !strings.Contains(out, "not-installed") {
			t.Errorf("after dpkg -P the package is still known: %s", out)
		}
		if found := p.leftovers(t, append([]string{"/etc", "/var/lib/systemd", "/var/lib/dpkg/info", "/run"}, usrDirs...)...); len(found) != 0 {
			t.Errorf("after dpkg -P these are left (enable symlinks, masks, state, files): %v", found)
		}
		if st := p.box.Show(t, "webapp.socket", "LoadState"); st["LoadState"] != "not-found" {
			t.Errorf("after dpkg -P webapp.socket is %v, want not-found", st)
		}
	})
}

// TestPackageRPM installs, upgrades, downgrades and erases the rpm under
// the box's systemd, the upgrades under load. The box is Debian: rpm's
// database there knows no other package, hence --nodeps.
func TestPackageRPM(t *testing.T) {
	systemdtest.Require(t)
	needTool(t, "rpm")
	rpm1 := buildPackage(t, "rpm", pkgV1)
	rpm2 := buildPackage(t, "rpm", pkgV2)
	p := bootPackageBox(t, systemdtest.Systemd{})
	rpm1, rpm2 = p.copyPackage(t, rpm1), p.copyPackage(t, rpm2)
	var edited string

	if !t.Run("install", func(t *testing.T) {
		// %post enables what the presets say; Debian's presets have no
		// rule for webapp, and the default rule is enable.
		p.run(t, "rpm", "-i", "--nodeps", rpm1)
		edited = editEnvFile(t, p, "/etc/sysconfig/webapp")
		firstRequest(t, p, pkgV1)
	}) {
		return
	}

	upgradeSequence(t, p, []string{"rpm", "-U", "--nodeps", rpm2}, []string{"rpm", "-U", "--nodeps", "--oldpackage", rpm1}, func(t *testing.T) {
		if got := string(p.box.ReadFile(t, "/etc/sysconfig/webapp")); got != edited {
			t.Errorf("the upgrade changed the edited /etc/sysconfig/webapp:\n%s", got)
		}
		if found := p.leftovers(t, "/etc/sysconfig"); len(found) != 1 {
			t.Errorf("files in /etc/sysconfig after the upgrade: %v, want only webapp", found)
		}
		if out := p.run(t, "rpm", "-q", "webapp"); !strings.Contains(out, pkgV2) {
			t.Errorf("rpm -q webapp after the upgrade: %s", out)
		}
		p.optionalOff(t, "after the upgrade")
	})

	t.Run("erase", func(t *testing.T) {
		p.run(t, "rpm", "-e", "--nodeps", "webapp")
		for _, u := range webappUnits {
			st := p.box.Show(t, u, "ActiveState", "LoadState")
			if st["ActiveState"] != "inactive" || st["LoadState"] != "not-found" {
				t.Errorf("after rpm -e %s is %v, want inactive and not-found", u, st)
			}
		}
		if !p.refused(t) {
			t.Errorf("after rpm -e the port still accepts connections")
		}
		if code, out := p.try(t, "rpm", "-q", "webapp"); code == 0 {
			t.Errorf("after rpm -e the package is still installed: %s", out)
		}
		// rpm keeps a modified configuration file as .rpmsave.
		found := p.leftovers(t, append([]string{"/etc", "/run", "/var/lib/systemd"}, usrDirs...)...)
		if len(found) != 1 || found[0] != "/etc/sysconfig/webapp.rpmsave" {
			t.Errorf("after rpm -e these are left: %v, want only /etc/sysconfig/webapp.rpmsave", found)
		}
	})
}
