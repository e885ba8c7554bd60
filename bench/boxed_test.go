package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/systemd/systemdtest"
)

// webappSockets are webapp's socket units in systemd/units, the name
// each passes (FileDescriptorName=) and its listen directive.
var webappSockets = []struct{ unit, name, directive string }{
	{"webapp.socket", "http", "ListenStream"},
	{"webapp-https.socket", "https", "ListenStream"},
	{"webapp-grpc.socket", "grpc", "ListenStream"},
	{"webapp-udp.socket", "udp", "ListenDatagram"},
}

// benchSlice is the slice webapp.service runs in under the benchmark, so
// that its cpu.stat counts every generation (and every `webapp reload`)
// of the service and nothing else; a service's own cgroup is removed at
// each restart, a slice's stays.
const benchSlice = "benchwebapp.slice"

// boxWebapp is webapp installed in a booted box from the units in
// systemd/units, each socket on a port of its own.
type boxWebapp struct {
	box *systemdtest.Box
	// addr is the address of each socket by name (http, https, grpc,
	// udp).
	addr map[string]string
	// dropIn is the drop-in written for webapp.service.
	dropIn string
}

// url is the http socket's URL.
func (w *boxWebapp) url() string { return "http://" + w.addr["http"] + "/" }

// installWebapp installs /usr/bin/webapp, the four socket units and
// webapp.service from systemd/units, with drop-ins that move each socket
// to a free port and put the service in benchSlice, and a certificate in
// /etc/webapp; then it starts the sockets and, by a first request, the
// service, and checks that all four sockets serve.
func installWebapp(t *testing.T, e *benchEnv, box *systemdtest.Box) *boxWebapp {
	t.Helper()
	w := &boxWebapp{box: box, addr: map[string]string{}}
	box.CopyFile(t, e.bins.webapp, "/usr/bin/webapp", 0o755)
	var units []string
	for _, s := range webappSockets {
		box.CopyFile(t, filepath.Join("..", "systemd", "units", s.unit), "/etc/systemd/system/"+s.unit, 0o644)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(systemdtest.Port(t)))
		w.addr[s.name] = addr
		box.WriteFile(t, "/etc/systemd/system/"+s.unit+".d/bench.conf",
			[]byte(fmt.Sprintf("[Socket]\n%s=\n%s=%s\n", s.directive, s.directive, addr)), 0o644)
		units = append(units, s.unit)
	}
	service, err := os.ReadFile(filepath.Join("..", "systemd", "units", "webapp.service"))
	if err != nil {
		t.Fatal(err)
	}
	box.WriteFile(t, "/etc/systemd/system/webapp.service", service, 0o644)
	w.dropIn = serviceDropIn(service, units)
	box.WriteFile(t, "/etc/systemd/system/webapp.service.d/bench.conf", []byte(w.dropIn), 0o644)
	cert, key := testCertificate(t)
	box.WriteFile(t, "/etc/webapp/tls.crt", cert, 0o644)
	box.WriteFile(t, "/etc/webapp/tls.key", key, 0o600)
	box.Systemctl(t, "daemon-reload")
	box.Systemctl(t, append([]string{"start"}, units...)...)
	// The first connection starts webapp.service.
	if err := waitServing(t.Context(), w.url(), 30*time.Second); err != nil {
		t.Fatalf("webapp in the sandbox: %v\n%s", err, box.Journal(t, "-u", "webapp.service", "-u", "webapp.socket"))
	}
	checkFourSockets(t, w.addr["https"], w.addr["grpc"], w.addr["udp"])
	return w
}

// serviceDropIn is the [Service] drop-in for the shipped webapp.service:
// the benchmark's slice, and whichever of the settings that serve all
// four sockets the unit does not have yet (Sockets=, ExecReload= run
// with full privileges so that `webapp reload` reads the certificate,
// LoadCredential= for it).
func serviceDropIn(unit []byte, sockets []string) string {
	b := &strings.Builder{}
	b.WriteString("[Service]\n# The benchmark reads the CPU time of every generation from this slice's cpu.stat.\n")
	fmt.Fprintf(b, "Slice=%s\n", benchSlice)
	has := func(key, prefix string) bool {
		sc := bufio.NewScanner(bytes.NewReader(unit))
		for sc.Scan() {
			k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
			if ok && strings.TrimSpace(k) == key && strings.HasPrefix(strings.TrimSpace(v), prefix) {
				return true
			}
		}
		return false
	}
	if !has("Sockets", "") {
		fmt.Fprintf(b, "Sockets=%s\n", strings.Join(sockets, " "))
	}
	if !has("ExecReload", "+") {
		b.WriteString("ExecReload=\nExecReload=+/usr/bin/webapp reload\n")
	}
	if !has("LoadCredential", "") {
		b.WriteString("LoadCredential=tls.crt:/etc/webapp/tls.crt\nLoadCredential=tls.key:/etc/webapp/tls.key\n")
	}
	return b.String()
}

// sliceCPU is the CPU time used so far in benchSlice.
func (w *boxWebapp) sliceCPU(t testing.TB) time.Duration {
	t.Helper()
	d, err := ParseCPUStat(w.box.ReadFile(t, "/sys/fs/cgroup/"+benchSlice+"/cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mainPID is webapp.service's MainPID.
func (w *boxWebapp) mainPID(t testing.TB) int {
	t.Helper()
	pid, _ := strconv.Atoi(w.box.Show(t, "webapp.service", "MainPID")["MainPID"])
	return pid
}

// systemctl runs systemctl in the box with args, bounded in time, and
// returns its error with its standard error.
func (w *boxWebapp) systemctl(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	_, stderr, err := w.box.Exec(ctx, append([]string{"systemctl"}, args...)...)
	return cmdError(err, stderr)
}
