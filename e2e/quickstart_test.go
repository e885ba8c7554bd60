package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd/systemdtest"
)

// TestQuickStart builds the README's quick start as it is written there
// (the program, its two units and the commands that install them) and
// runs it under systemd: socket activation, `systemctl reload` through
// the program's own reload command, and a stop. Only `go get` is left out:
// the test builds against this checkout, offline.
func TestQuickStart(t *testing.T) {
	blocks := quickStart(t)
	bin := buildQuickStart(t, blocks["main.go"])

	box := systemdtest.Boot(t, systemdtest.Options{})
	port := systemdtest.Port(t)
	box.CopyFile(t, bin, "/usr/local/bin/myservice", 0o755)
	box.WriteFile(t, "/etc/systemd/system/myservice.socket", []byte(blocks["myservice.socket"]), 0o644)
	box.WriteFile(t, "/etc/systemd/system/myservice.service", []byte(blocks["myservice.service"]), 0o644)
	// The README's address, moved to a free port.
	box.WriteFile(t, "/etc/systemd/system/myservice.socket.d/port.conf",
		[]byte(fmt.Sprintf("[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n", port)), 0o644)
	box.Systemctl(t, "daemon-reload")
	box.Systemctl(t, "enable", "--now", "myservice.socket", "myservice.service")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	show := func() map[string]string {
		return box.Show(t, "myservice.service", "MainPID", "ActiveState", "StatusText", "Result", "NRestarts")
	}
	waitActive := func() map[string]string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := show()
			if st["ActiveState"] == "active" && st["MainPID"] != "0" {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("myservice.service is not active after 30 s: %v\n%s", st, box.Journal(t, "-u", "myservice.service", "-o", "cat"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	first := waitActive()
	if body := mustGet(t, url); body != "hello\n" {
		t.Fatalf("GET / = %q, want the quick start's hello", body)
	}
	for _, enabled := range []string{"myservice.socket", "myservice.service"} {
		if out, _, _ := box.Exec(t.Context(), "systemctl", "is-enabled", enabled); strings.TrimSpace(out) != "enabled" {
			t.Errorf("systemctl is-enabled %s = %q after enable --now, want enabled", enabled, strings.TrimSpace(out))
		}
	}

	// The reload: ExecReload= runs `myservice reload`, which must talk to
	// the running server (a second server would fail on its address and
	// turn the status into "start failed").
	for i := range 3 {
		before := show()["MainPID"]
		box.Systemctl(t, "reload", "myservice.service")
		st := waitActive()
		if st["MainPID"] == before {
			t.Fatalf("reload %d: MainPID still %s", i+1, before)
		}
		if strings.Contains(st["StatusText"], "failed") {
			t.Errorf("reload %d: status %q", i+1, st["StatusText"])
		}
		if body := mustGet(t, url); body != "hello\n" {
			t.Errorf("reload %d: GET / = %q", i+1, body)
		}
	}
	if n := show()["NRestarts"]; n != "0" {
		t.Errorf("NRestarts=%s after the reloads, want 0", n)
	}
	j := box.Journal(t, "-u", "myservice.service", "-o", "cat")
	if strings.Contains(j, "address already in use") {
		t.Errorf("a reload started a second server:\n%s", j)
	}

	box.Systemctl(t, "stop", "myservice.service")
	st := show()
	if st["ActiveState"] != "inactive" || st["Result"] != "success" {
		t.Errorf("after stop: %v, want inactive with Result=success (first MainPID %s)", st, first["MainPID"])
	}
}

// quickStart returns the blocks of the README that follow a
// "<!-- quickstart: NAME -->" line, by NAME.
func quickStart(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- quickstart: (\\S+) -->\n```[a-z]*\n(.*?)```\n")
	blocks := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		blocks[m[1]] = m[2]
	}
	for _, name := range []string{"main.go", "myservice.socket", "myservice.service"} {
		if blocks[name] == "" {
			t.Fatalf("README.md has no quick start block %q (a fenced block after <!-- quickstart: %s -->)", name, name)
		}
	}
	return blocks
}

// buildQuickStart builds the quick start's main.go as a module of its own
// that requires this checkout's baton, offline: the dependencies come from
// the module cache and this module's go.sum.
func buildQuickStart(t *testing.T, mainGo string) string {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"main.go": mainGo,
		"go.mod":  "module example.com/myservice\n\ngo 1.26\n\nrequire github.com/baton-dev/baton v0.0.0\n\nreplace github.com/baton-dev/baton => " + repo + "\n",
		"go.sum":  string(sum),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "CGO_ENABLED=0")
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-trimpath", "-o", "myservice", "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s (the README's quick start): %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return filepath.Join(dir, "myservice")
}

// mustGet fetches url on a new connection and returns the body of a 200.
func mustGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %q %v", url, resp.StatusCode, b, err)
	}
	return string(b)
}
