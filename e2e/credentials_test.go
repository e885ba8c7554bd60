package e2e

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testcert"
)

// credentialsDir is webapp.service's $CREDENTIALS_DIRECTORY in the box.
const credentialsDir = "/run/credentials/webapp.service"

// credentials lists the files of webapp.service's credentials directory
// with their contents, modes and owners.
func (s *service) credentials(t *testing.T) map[string]string {
	t.Helper()
	dir := filepath.Join(s.box.Root(), credentialsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("reading %s in the box: %v", credentialsDir, err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

// uidOf is the real uid of a process of the box, from /proc/PID/status.
func (s *service) uidOf(t *testing.T, pid string) string {
	t.Helper()
	for _, l := range strings.Split(string(s.box.ReadFile(t, "/proc/"+pid+"/status")), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			return strings.Fields(v)[0]
		}
	}
	t.Fatalf("no Uid: line in /proc/%s/status", pid)
	return ""
}

// TestUnitCredentials proves what webapp.service says about the TLS
// certificate on systemd 252: LoadCredential=tls:/etc/webapp copies the
// directory's files, named tls_<file>, readable by the service's dynamic
// user only, when the service starts; the service starts without the
// directory, with it empty, and with the files; a reload copies nothing
// (a restart does); and ExecReload=+ runs as root, with RUNTIME_DIRECTORY
// set, and can read the root-only key and reach the control socket that
// the dynamic user owns.
func TestUnitCredentials(t *testing.T) {
	t.Parallel()
	// A second reload command, run like webapp's (with "+"), reports what
	// it sees. "$$" leaves the variable to the shell, "%%" the format to
	// stat: systemd would expand $VAR and %u itself.
	const probe = "/run/reload-probe"
	s := startService(t, serviceOptions{
		NoStart: true,
		ServiceDropIn: "ExecReload=+/bin/sh -c 'id -u >" + probe + "; echo \"$$RUNTIME_DIRECTORY\" >>" + probe +
			"; stat -c %%u \"$$RUNTIME_DIRECTORY/control.sock\" >>" + probe + "; sha256sum </etc/webapp/tls.key | head -c 64 >>" + probe + "'",
	})
	s.box.Run(t, "rm", "-rf", "/etc/webapp") // the host's, showing through, if any

	// The form not chosen: one file per credential fails the start while
	// the file is missing.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, stderr, err := s.box.Exec(ctx, "systemd-run", "--wait", "--quiet", "-p", "DynamicUser=yes",
		"-p", "LoadCredential=tls.crt:/etc/webapp/tls.crt", "/bin/true")
	// systemd-run --wait exits with the unit's exit status.
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 243 {
		t.Errorf("a unit with LoadCredential=tls.crt:/etc/webapp/tls.crt and no such file: %v\n%s%s\nwant it to fail with 243/CREDENTIALS (webapp.service's comment says so)", err, out, stderr)
	}

	want := func(step string, files map[string]string) {
		t.Helper()
		if p := s.show(t, "ActiveState", "Result"); p["ActiveState"] != "active" {
			t.Fatalf("%s: webapp.service is %v, want active; journal:\n%s", step, p, s.journal(t))
		}
		got := s.credentials(t)
		for k := range got {
			if _, ok := files[k]; !ok && k != "tls" {
				t.Errorf("%s: credential %s = %q, want none", step, k, got[k])
			}
		}
		for k, v := range files {
			if got[k] != v {
				t.Errorf("%s: credential %s = %q, want %q", step, k, got[k], v)
			}
		}
		if _, ok := got["tls"]; !ok {
			t.Errorf("%s: no credential tls (SetCredential= sets it in every case), got %v", step, slices.Sorted(maps.Keys(got)))
		}
	}

	// No /etc/webapp at all: SetCredential='s fallback.
	s.box.Systemctl(t, "start", "webapp.socket")
	s.get(t, "/")
	want("without /etc/webapp", map[string]string{})

	// The directory as the packages ship it, without a certificate.
	s.box.Run(t, "install", "-d", "-m", "0755", "/etc/webapp")
	s.box.Systemctl(t, "restart", "webapp.service")
	want("with an empty /etc/webapp", map[string]string{})

	// A certificate and a root-only key.
	cert1, key1 := credentialPair(t)
	cert2, key2 := credentialPair(t)
	s.box.WriteFile(t, "/etc/webapp/tls.crt", cert1, 0o644)
	s.box.WriteFile(t, "/etc/webapp/tls.key", key1, 0o600)
	s.box.Systemctl(t, "restart", "webapp.service")
	first := map[string]string{"tls_tls.crt": string(cert1), "tls_tls.key": string(key1)}
	want("with tls.crt and tls.key", first)
	pid := s.mainPID(t)
	uid := s.uidOf(t, pid)
	if uid == "0" {
		t.Fatalf("webapp runs as root, want its dynamic user")
	}
	for _, name := range []string{"tls_tls.crt", "tls_tls.key"} {
		fi, err := os.Stat(filepath.Join(s.box.Root(), credentialsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		owner := strings.TrimSpace(s.box.Run(t, "stat", "-c", "%u", filepath.Join(credentialsDir, name)))
		if fi.Mode().Perm()&0o077 != 0 || owner != uid {
			t.Errorf("credential %s: mode %v owner %s, want readable by webapp's uid %s only", name, fi.Mode().Perm(), owner, uid)
		}
	}

	// A reload copies nothing: the credentials stay those of the start.
	s.box.WriteFile(t, "/etc/webapp/tls.crt", cert2, 0o644)
	s.box.WriteFile(t, "/etc/webapp/tls.key", key2, 0o600)
	s.box.Systemctl(t, "reload", "webapp.service")
	if after := s.mainPID(t); after == pid {
		t.Fatalf("systemctl reload left MainPID %s, want a new generation", pid)
	}
	want("after a reload", first)
	seen := strings.Split(strings.TrimSpace(string(s.box.ReadFile(t, probe))), "\n")
	if wantSeen := []string{"0", "/run/webapp", uid, fmt.Sprintf("%x", sha256.Sum256(key2))}; !slices.Equal(seen, wantSeen) {
		t.Errorf("ExecReload=+ saw uid, RUNTIME_DIRECTORY, owner of control.sock, tls.key = %q, want %q", seen, wantSeen)
	}

	// A restart copies the current files.
	s.box.Systemctl(t, "restart", "webapp.service")
	want("after a restart", map[string]string{"tls_tls.crt": string(cert2), "tls_tls.key": string(key2)})
}

// credentialPair makes a self-signed certificate and its key, in PEM: a
// pair `webapp reload` accepts.
func credentialPair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	c := testcert.New(t, "webapp credentials")
	return c.CertPEM, c.KeyPEM
}
