package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const manifestFile = "kubernetes/webapp.yaml"

// manifests is webapp.yaml decoded.
type manifests struct {
	deployment *appsv1.Deployment
	service    *corev1.Service
	pdb        *policyv1.PodDisruptionBudget
}

// strict decodes one JSON document into v, refusing unknown fields.
func strict(doc []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

// decode splits the YAML stream into documents and decodes each strictly
// into the API type of its kind. Duplicate keys, unknown fields, unknown
// kinds and a kind given twice are errors.
func decode(src []byte) (*manifests, error) {
	m := &manifests{}
	for i, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(src), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(part, "")) == "" {
			continue
		}
		doc, err := yaml.YAMLToJSONStrict([]byte(part))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var head struct{ APIVersion, Kind string }
		if err := json.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var target any
		switch av := head.APIVersion + " " + head.Kind; av {
		case "apps/v1 Deployment":
			if m.deployment != nil {
				return nil, fmt.Errorf("document %d: a second Deployment", i)
			}
			m.deployment = &appsv1.Deployment{}
			target = m.deployment
		case "v1 Service":
			if m.service != nil {
				return nil, fmt.Errorf("document %d: a second Service", i)
			}
			m.service = &corev1.Service{}
			target = m.service
		case "policy/v1 PodDisruptionBudget":
			if m.pdb != nil {
				return nil, fmt.Errorf("document %d: a second PodDisruptionBudget", i)
			}
			m.pdb = &policyv1.PodDisruptionBudget{}
			target = m.pdb
		default:
			return nil, fmt.Errorf("document %d: %q: not a kind this check knows", i, av)
		}
		if err := strict(doc, target); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, head.Kind, err)
		}
	}
	switch {
	case m.deployment == nil:
		return nil, errors.New("no Deployment")
	case m.service == nil:
		return nil, errors.New("no Service")
	case m.pdb == nil:
		return nil, errors.New("no PodDisruptionBudget")
	}
	return m, nil
}

// flagValue is the value of --name=v or --name v in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func matches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// check says what is inconsistent in the manifests, all of it.
func check(m *manifests) []string {
	var bad []string
	d := m.deployment
	spec := d.Spec.Template.Spec
	podLabels := d.Spec.Template.Labels
	if d.Spec.Selector == nil || !matches(d.Spec.Selector.MatchLabels, podLabels) {
		bad = append(bad, "the Deployment's selector does not match its pod template's labels")
	}
	if !matches(m.service.Spec.Selector, podLabels) {
		bad = append(bad, "the Service's selector does not match the pods")
	}
	if m.pdb.Spec.Selector == nil || !matches(m.pdb.Spec.Selector.MatchLabels, podLabels) {
		bad = append(bad, "the PodDisruptionBudget's selector does not match the pods")
	}
	if len(spec.Containers) != 1 {
		return append(bad, fmt.Sprintf("%d containers, want webapp alone", len(spec.Containers)))
	}
	c := spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	listen, _ := flagValue(c.Args, "listen")
	if _, port, err := net.SplitHostPort(listen); err != nil || len(c.Ports) != 1 || fmt.Sprint(c.Ports[0].ContainerPort) != port {
		bad = append(bad, fmt.Sprintf("--listen=%q does not listen on the one containerPort %v", listen, c.Ports))
	}
	for _, sp := range m.service.Spec.Ports {
		if sp.TargetPort.Type == intstr.String {
			if _, ok := ports[sp.TargetPort.StrVal]; !ok {
				bad = append(bad, fmt.Sprintf("the Service's targetPort %q names no container port", sp.TargetPort.StrVal))
			}
		} else if sp.TargetPort.IntVal != c.Ports[0].ContainerPort {
			bad = append(bad, fmt.Sprintf("the Service's targetPort %d is not the container port", sp.TargetPort.IntVal))
		}
	}
	probe := func(what string, p *corev1.Probe, path string) {
		switch {
		case p == nil || p.HTTPGet == nil:
			bad = append(bad, what+": want an httpGet probe")
		case p.HTTPGet.Path != path:
			bad = append(bad, fmt.Sprintf("%s: path %q, want %s", what, p.HTTPGet.Path, path))
		case p.HTTPGet.Port.Type == intstr.String && ports[p.HTTPGet.Port.StrVal] == 0:
			bad = append(bad, fmt.Sprintf("%s: port %q names no container port", what, p.HTTPGet.Port.StrVal))
		}
	}
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	probe("livenessProbe", c.LivenessProbe, "/healthz")

	// The termination timing: readiness must turn within the delay, and
	// the delay plus the drain must fit the grace period.
	dur := func(name string) time.Duration {
		v, ok := flagValue(c.Args, name)
		if !ok {
			bad = append(bad, fmt.Sprintf("no --%s in the container's args", name))
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			bad = append(bad, fmt.Sprintf("--%s=%q: %v", name, v, err))
		}
		return d
	}
	delay, drain := dur("shutdown-delay"), dur("drain-timeout")
	if delay <= 0 {
		bad = append(bad, fmt.Sprintf("--shutdown-delay=%v: want a delay for endpoint removal to propagate", delay))
	}
	if spec.TerminationGracePeriodSeconds == nil {
		bad = append(bad, "no terminationGracePeriodSeconds")
	} else if grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; grace < delay+drain+time.Second {
		bad = append(bad, fmt.Sprintf("terminationGracePeriodSeconds %v is shorter than --shutdown-delay %v + --drain-timeout %v + 1s", grace, delay, drain))
	}
	if r := c.ReadinessProbe; r != nil {
		if turn := time.Duration(max(r.PeriodSeconds, 1)*max(r.FailureThreshold, 1)) * time.Second; turn >= delay {
			bad = append(bad, fmt.Sprintf("readiness needs %v (periodSeconds × failureThreshold) to see the 503, not less than --shutdown-delay %v", turn, delay))
		}
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		bad = append(bad, "a preStop hook adds its delay to --shutdown-delay's: use one of them (the image has no sleep for an exec hook)")
	}
	if spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace {
		bad = append(bad, "shareProcessNamespace: webapp would not be PID 1 and would not reap")
	}

	// Rollouts and disruptions keep serving.
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	if ru := d.Spec.Strategy.RollingUpdate; d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" {
		bad = append(bad, "want a RollingUpdate with maxUnavailable 0")
	}
	if mu := m.pdb.Spec.MaxUnavailable; mu == nil || mu.Type != intstr.Int || mu.IntVal < 1 || mu.IntVal >= replicas {
		bad = append(bad, fmt.Sprintf("the PodDisruptionBudget's maxUnavailable %v must allow one eviction and keep a pod of %d", mu, replicas))
	}
	return bad
}

func readManifests(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestManifests: webapp.yaml decodes strictly into the Kubernetes types
// and its settings agree with one another.
func TestManifests(t *testing.T) {
	m, err := decode(readManifests(t))
	if err != nil {
		t.Fatalf("%s: %v", manifestFile, err)
	}
	for _, b := range check(m) {
		t.Errorf("%s: %s", manifestFile, b)
	}
}

// TestManifestsRejected: the checks fail on broken copies of the file,
// one fault each, so that they cannot pass on anything.
func TestManifestsRejected(t *testing.T) {
	src := string(readManifests(t))
	for _, c := range []struct{ name, old, new, want string }{
		{"unknown field", "readinessProbe:", "readinessProbes:", `unknown field "readinessProbes"`},
		{"wrong type", "replicas: 3", "replicas: three", "cannot unmarshal"},
		{"duplicate key", "  replicas: 3\n", "  replicas: 3\n  replicas: 4\n", `key "replicas" already set`},
		{"unknown kind", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgets", "not a kind this check knows"},
		{"readiness on liveness path", "path: /readyz", "path: /healthz", "readinessProbe: path"},
		{"grace too short", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 20", "shorter than --shutdown-delay"},
		{"no delay", "--shutdown-delay=5s", "--shutdown-delay=0s", "want a delay"},
		{"slow readiness", "periodSeconds: 1\n", "periodSeconds: 5\n", "not less than --shutdown-delay"},
		{"port name", "port: http\n", "port: web\n", `port "web" names no container port`},
		{"service selector", "  selector:\n    app.kubernetes.io/name: webapp", "  selector:\n    app.kubernetes.io/name: other", "Service's selector"},
		{"preStop", "          resources:", "          lifecycle:\n            preStop:\n              sleep:\n                seconds: 5\n          resources:", "preStop"},
		{"budget of all", "maxUnavailable: 1\n", "maxUnavailable: 3\n", "maxUnavailable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(src, c.old) {
				t.Fatalf("%s has no %q to break", manifestFile, c.old)
			}
			broken := strings.Replace(src, c.old, c.new, 1)
			var got string
			m, err := decode([]byte(broken))
			if err != nil {
				got = err.Error()
			} else {
				got = strings.Join(check(m), "; ")
			}
			if !strings.Contains(got, c.want) {
				t.Errorf("with %q for %q: %q, want an error containing %q", c.new, c.old, got, c.want)
			}
		})
	}
}

// containerfile is the Containerfile's instructions, continuation lines
// joined and comments dropped.
func containerfile(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestContainerfile builds webapp with the Containerfile's own build
// command, checks that the binary is static (FROM scratch has no libc),
// that the image's last stage is scratch with that binary as its exec-form
// entry point, and then runs the binary with the Deployment's arguments:
// the probes' paths answer as the manifest says, 200 while serving, and
// /readyz 503 with /healthz 200 right after SIGTERM.
func TestContainerfile(t *testing.T) {
	lines := containerfile(t)
	var build, entry string
	var froms []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "FROM "):
			froms = append(froms, l)
		case strings.HasPrefix(l, "RUN ") && strings.Contains(l, " go build "):
			build = strings.TrimPrefix(l, "RUN ")
		case strings.HasPrefix(l, "ENTRYPOINT "):
			entry = strings.TrimPrefix(l, "ENTRYPOINT ")
		}
	}
	if len(froms) < 2 || froms[len(froms)-1] != "FROM scratch" {
		t.Errorf("stages %q: want a build stage and a last stage FROM scratch", froms)
	}
	var ep []string
	if err := json.Unmarshal([]byte(entry), &ep); err != nil || len(ep) == 0 || ep[0] != "/webapp" {
		t.Errorf("ENTRYPOINT %s: want the exec form running /webapp (PID 1, gets SIGTERM itself)", entry)
	}
	if !strings.HasPrefix(build, "CGO_ENABLED=0 go build ") || !strings.HasSuffix(build, "-o /out/webapp ./cmd/webapp") {
		t.Fatalf("build command %q: want CGO_ENABLED=0 go build ... -o /out/webapp ./cmd/webapp", build)
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	// The same command, in the repository root (the build context).
	bin := filepath.Join(t.TempDir(), "webapp")
	cmd := exec.Command("/bin/sh", "-c", strings.Replace(build, "-o /out/webapp", "-o "+bin, 1))
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %v program header: not static, it cannot run FROM scratch", bin, p.Type)
		}
	}
	f.Close()

	m, err := decode(readManifests(t))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{}, m.deployment.Spec.Template.Spec.Containers[0].Args...)
	addr := freeAddr(t)
	for i, a := range args {
		if strings.HasPrefix(a, "--listen=") {
			args[i] = "--listen=" + addr // the pod's :8080, here on a free loopback port
		}
	}
	c := m.deployment.Spec.Template.Spec.Containers[0]
	run := exec.Command(bin, append(ep[1:], args...)...)
	run.Env = []string{"PATH=/nonexistent"} // FROM scratch: nothing else
	var stderr bytes.Buffer
	run.Stderr = &stderr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { run.Wait(); close(done) }()
	t.Cleanup(func() {
		run.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("webapp's log:\n%s", stderr.String())
		}
	})
	get := func(path string) (int, error) {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := cl.Get("http://" + addr + path)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, err := get(c.ReadinessProbe.HTTPGet.Path); err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200 with the Deployment's args %q", c.ReadinessProbe.HTTPGet.Path, args)
		}
	}
	if code, err := get(c.LivenessProbe.HTTPGet.Path); err != nil || code != 200 {
		t.Errorf("liveness %s = %d, %v; want 200", c.LivenessProbe.HTTPGet.Path, code, err)
	}
	if err := run.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(4 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, err := get(c.ReadinessProbe.HTTPGet.Path)
		if err == nil && code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness %s = %d, %v after SIGTERM; want 503 within the shutdown delay", c.ReadinessProbe.HTTPGet.Path, code, err)
		}
	}
	if code, err := get(c.LivenessProbe.HTTPGet.Path); err != nil || code != 200 {
		t.Errorf("liveness %s = %d, %v within the shutdown delay; want 200 (a stopping pod is not restarted)", c.LivenessProbe.HTTPGet.Path, code, err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
