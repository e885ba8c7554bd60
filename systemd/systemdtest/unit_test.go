package systemdtest

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		in      string
		want    procStat
		wantErr bool
	}{
		{"1 (systemd) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42 1 1", procStat{'S', 42}, false},
		{"7 (a) b) (c) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0", procStat{'Z', 99}, false},
		{"7 (short) R 1 2", procStat{}, true},
		{"no parenthesis", procStat{}, true},
	}
	for _, tt := range tests {
		got, err := parseStat([]byte(tt.in))
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("parseStat(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestAliveSelf(t *testing.T) {
	self, err := procOf(os.Getpid())
	if err != nil {
		cannotRun(t, "no /proc: %v", err)
	}
	if !alive(self) {
		t.Errorf("alive(self) = false, want true")
	}
	if alive(proc{PID: self.PID, Start: self.Start + 1}) {
		t.Errorf("alive(self with another start time) = true, want false (PID reuse)")
	}
	if alive(proc{}) {
		t.Errorf("alive(zero) = true, want false")
	}
}

func TestIsNamespaceInit(t *testing.T) {
	tests := []struct {
		status string
		want   bool
	}{
		{"Name:\tsystemd\nNSpid:\t4568\t1\n", true},
		{"Name:\tsystemd\nNSpid:\t1\n", false},
		{"Name:\tsh\nNSpid:\t4570\t3\n", false},
		{"Name:\tx\nNSpid:\t9\t5\t1\n", true},
		{"Name:\tx\n", false},
	}
	for _, tt := range tests {
		if got := isNamespaceInit([]byte(tt.status)); got != tt.want {
			t.Errorf("isNamespaceInit(%q) = %v, want %v", tt.status, got, tt.want)
		}
	}
}

func TestBoundingSetArg(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"0000000000000000", "-all"},
		{"0000000000000021", "-all,+chown,+kill"},
		// nspawn's default set: no sys_module, sys_rawio, sys_time, ...
		{"00000000fdecafff", ""},
		{"000001ffffffffff", "-all,+" + strings.Join(capNames[:], ",+")},
	}
	for _, tt := range tests {
		got, err := boundingSetArg(tt.in)
		if err != nil {
			t.Errorf("boundingSetArg(%q) error %v", tt.in, err)
			continue
		}
		if tt.want == "" { // check by decoding
			mask, _ := strconv.ParseUint(tt.in, 16, 64)
			for i, n := range capNames {
				has := strings.Contains(got+",", ",+"+n+",")
				if has != (mask&(1<<i) != 0) {
					t.Errorf("boundingSetArg(%q) = %q: capability %s wrong", tt.in, got, n)
				}
			}
			continue
		}
		if got != tt.want {
			t.Errorf("boundingSetArg(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if _, err := boundingSetArg("zz"); err == nil {
		t.Errorf("boundingSetArg(zz) = nil error, want one")
	}
}

func TestParseShow(t *testing.T) {
	got := parseShow("MainPID=42\nActiveState=active\nExecStart={ path=/bin/x ; argv[]=/bin/x a=b }\nStatusText=\nnoise\n")
	want := map[string]string{
		"MainPID":     "42",
		"ActiveState": "active",
		"ExecStart":   "{ path=/bin/x ; argv[]=/bin/x a=b }",
		"StatusText":  "",
	}
	if len(got) != len(want) {
		t.Errorf("parseShow = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("parseShow[%s] = %q, want %q", k, got[k], v)
		}
	}
}

func TestSanitizeName(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"TestWebapp/reload_under_load", 32, "testwebapp-reload-under-load"},
		{"Test_X::y", 32, "test-x-y"},
		{"---", 32, "box"},
		{"", 32, "box"},
		{"abcdefghij", 4, "abcd"},
		{"abc/defgh", 4, "abc"},
		{"Ünïcode", 32, "n-code"},
	}
	for _, tt := range tests {
		if got := sanitizeName(tt.in, tt.max); got != tt.want {
			t.Errorf("sanitizeName(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestParseCgroupRoots(t *testing.T) {
	hybrid := "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n" +
		"cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n" +
		"cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,xattr,name=systemd 0 0\n" +
		"cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
	unified := "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n"
	legacy := "cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n"
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{hybrid, []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"}, false},
		{unified, []string{"/sys/fs/cgroup"}, false},
		{legacy, nil, true},
	}
	for _, tt := range tests {
		got, err := parseCgroupRoots(tt.in)
		if !slices.Equal(got, tt.want) || (err != nil) != tt.wantErr {
			t.Errorf("parseCgroupRoots(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/var/tmp/a", "/var/tmp/a"},
		{`/var/tmp/a\040b`, "/var/tmp/a b"},
		{`/x\134y`, `/x\y`},
		{`/x\9`, `/x\9`},
	}
	for _, tt := range tests {
		if got := unescapeMount(tt.in); got != tt.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestBoxRel(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"/etc/systemd/system/x.socket", "etc/systemd/system/x.socket", false},
		{"/usr/../etc//x", "etc/x", false},
		{"/../../etc/x", "etc/x", false},
		{"etc/x", "", true},
		{"/", "", true},
	}
	for _, tt := range tests {
		got, err := boxRel(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("boxRel(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSeed(t *testing.T) {
	dir := t.TempDir()
	if err := writeSeed(dir, "box-1"); err != nil {
		t.Fatal(err)
	}
	id, err := os.ReadFile(filepath.Join(dir, "etc/machine-id"))
	if err != nil || len(strings.TrimSpace(string(id))) != 32 {
		t.Errorf("machine-id = %q, %v; want 32 hex digits", id, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "etc/systemd/system/systemd-logind.service")); l != "/dev/null" {
		t.Errorf("systemd-logind.service -> %q, %v; want masked", l, err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "etc/systemd/system/default.target")); l != targetName {
		t.Errorf("default.target -> %q, want %s", l, targetName)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "etc/systemd/journald.conf.d/baton-sdbox.conf"))
	if !strings.Contains(string(conf), "Storage=volatile") || !strings.Contains(string(conf), "RateLimitBurst=0") {
		t.Errorf("journald drop-in = %q, want Storage=volatile and RateLimitBurst=0", conf)
	}
}

func TestRequirePolicy(t *testing.T) {
	// Require's decision, with a reason that forbids booting.
	reason := "needs root to boot a systemd sandbox"
	apply := func(tb testing.TB) { requireWith(tb, errString(reason)) }

	t.Setenv("CI", "true")
	r := record(t, apply)
	if r.skip != "" || !strings.Contains(r.fatal, reason) {
		t.Errorf("CI=true: fatal %q, skip %q; want a failure naming the reason", r.fatal, r.skip)
	}

	t.Setenv("CI", "")
	r = record(t, apply)
	want := "systemdtest: needs root to boot a systemd sandbox; run `sudo make test`"
	if r.fatal != "" || r.skip != want {
		t.Errorf("CI unset: fatal %q, skip %q; want skip %q", r.fatal, r.skip, want)
	}

	r = record(t, func(tb testing.TB) { requireWith(tb, nil) })
	if r.fatal != "" || r.skip != "" {
		t.Errorf("no reason: fatal %q, skip %q; want neither", r.fatal, r.skip)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestPort(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p := Port(t)
		if p < portMin || p >= portMax {
			t.Fatalf("Port() = %d, want in [%d, %d)", p, portMin, portMax)
		}
		if seen[p] {
			t.Fatalf("Port() = %d twice", p)
		}
		seen[p] = true
		if !bindable(p) {
			t.Errorf("Port() = %d, which cannot be bound", p)
		}
	}
}

func TestPortSkipsLockedAndBusy(t *testing.T) {
	Port(t) // initialise the allocator
	ports.Lock()
	next := ports.next
	ports.Unlock()
	if next+2 >= portMax {
		cannotRun(t, "port allocator at the end of its range")
	}
	// Another process holds the lock of the next port, and something
	// listens on the one after it.
	lock, err := lockPort(next)
	if err != nil || lock == nil {
		cannotRun(t, "cannot claim a port: %v", err)
	}
	defer lock.Close()
	l, err := listenPort(next + 1)
	if err != nil {
		cannotRun(t, "port %d busy: %v", next+1, err)
	}
	defer l.Close()
	if got := Port(t); got == next || got == next+1 {
		t.Errorf("Port() = %d, want neither the locked %d nor the busy %d", got, next, next+1)
	}
}

func listenPort(p int) (interface{ Close() error }, error) {
	return net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
}

func TestBootRejectsBadDir(t *testing.T) {
	r := record(t, func(tb testing.TB) { Boot(tb, Options{Dir: "/var/tmp/bad:dir"}) })
	if r.skip != "" {
		cannotRun(t, "%s", r.skip)
	}
	if !strings.Contains(r.fatal, "contains white space, ',' or ':'") {
		t.Errorf("Boot(Dir with a colon) fatal = %q, want the path rejected", r.fatal)
	}
	if _, err := os.Stat("/var/tmp/bad:dir"); err == nil {
		t.Errorf("Boot created /var/tmp/bad:dir")
	}
}

// cannotRun ends a test whose precondition does not hold on this machine:
// with CI=true it fails, elsewhere it skips with the reason.
func cannotRun(t *testing.T, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf("CI=true but "+format, args...)
	}
	t.Skipf(format, args...)
}
