package systemdtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd/systemdtest"
)

// A test package that boots boxes sweeps the leftovers of killed runs.
func ExampleSweep() {
	testMain := func(m *testing.M) {
		if err := systemdtest.Sweep(""); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		code := m.Run()
		systemdtest.Sweep("")
		os.Exit(code)
	}
	_ = testMain
}

// Socket activation of a service in a box on the host's network.
func ExampleBoot() {
	testActivation := func(t *testing.T) {
		box := systemdtest.Boot(t, systemdtest.Options{})
		port := systemdtest.Port(t)
		box.CopyFile(t, "testdata/hello", "/usr/local/bin/hello", 0o755)
		box.WriteFile(t, "/etc/systemd/system/hello.socket",
			fmt.Appendf(nil, "[Socket]\nListenStream=127.0.0.1:%d\n", port), 0o644)
		box.WriteFile(t, "/etc/systemd/system/hello.service",
			[]byte("[Service]\nType=notify\nExecStart=/usr/local/bin/hello\n"), 0o644)
		box.Systemctl(t, "daemon-reload")
		box.Systemctl(t, "start", "hello.socket")

		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if p := box.Show(t, "hello.service", "ActiveState", "MainPID"); p["ActiveState"] != "active" {
			t.Errorf("hello.service: %v, want ActiveState=active", p)
		}
		t.Log(box.Journal(t, "-u", "hello.service", "-o", "cat"))
	}
	_ = testActivation
}

// A box with its own network namespace, reached through DialContext.
func ExampleBox_DialContext() {
	testPrivate := func(t *testing.T) {
		box := systemdtest.Boot(t, systemdtest.Options{PrivateNetwork: true})
		// ... install and start a service on 127.0.0.1:8080 in the box ...
		client := &http.Client{Transport: &http.Transport{DialContext: box.DialContext}}
		resp, err := client.Get("http://127.0.0.1:8080/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
	}
	_ = testPrivate
}

// Commands with their own deadline or input.
func ExampleBox_Exec() {
	testExec := func(t *testing.T) {
		box := systemdtest.Boot(t, systemdtest.Options{})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		stdout, stderr, err := box.Exec(ctx, "systemctl", "reload", "webapp.service")
		if err != nil {
			t.Fatalf("reload: %v\n%s%s", err, stdout, stderr)
		}
	}
	_ = testExec
}
