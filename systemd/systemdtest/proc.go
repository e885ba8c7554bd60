package systemdtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// proc identifies one process across PID reuse: its PID and its start time
// (field 22 of /proc/PID/stat, in clock ticks since boot).
type proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// procStat is the part of /proc/PID/stat the package needs.
type procStat struct {
	state byte   // R, S, D, Z, ...
	start uint64 // starttime
}

// parseStat parses the contents of /proc/PID/stat. The command name (field 2)
// may contain spaces and parentheses, so parsing starts after the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("no ')' in stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22, so f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("stat has %d fields after the name, want at least 20", len(f))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("starttime: %w", err)
	}
	return procStat{state: f[0][0], start: start}, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// procOf returns pid with its current start time.
func procOf(pid int) (proc, error) {
	st, err := readStat(pid)
	if err != nil {
		return proc{}, err
	}
	return proc{PID: pid, Start: st.start}, nil
}

// alive reports whether p still runs. A reused PID, a zombie (state Z, which
// the host's PID 1 may take more than a second to reap) and a dead process
// all count as not alive.
func alive(p proc) bool {
	if p.PID <= 0 {
		return false
	}
	st, err := readStat(p.PID)
	if err != nil {
		return false
	}
	return st.start == p.Start && st.state != 'Z' && st.state != 'X' && st.state != 'x'
}

// statusField returns the value of the line "key:\tvalue" of /proc/PID/status
// contents.
func statusField(status []byte, key string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// isNamespaceInit reports whether /proc/PID/status contents describe PID 1 of
// a child PID namespace: an NSpid line with more than one PID, the last one 1.
func isNamespaceInit(status []byte) bool {
	v, ok := statusField(status, "NSpid")
	if !ok {
		return false
	}
	f := strings.Fields(v)
	return len(f) > 1 && f[len(f)-1] == "1"
}

// children returns the PIDs of the children of every thread of pid.
func children(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// findInit returns the child of nspawn that is PID 1 of the box.
func findInit(nspawn int) (proc, bool) {
	for _, c := range children(nspawn) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c))
		if err != nil || !isNamespaceInit(status) {
			continue
		}
		p, err := procOf(c)
		if err != nil {
			continue
		}
		return p, true
	}
	return proc{}, false
}

// capNames are the capability names setpriv knows, indexed by capability
// number (linux/capability.h).
var capNames = [...]string{
	"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill",
	"setgid", "setuid", "setpcap", "linux_immutable", "net_bind_service",
	"net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
	"sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
	"sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
	"sys_tty_config", "mknod", "lease", "audit_write", "audit_control",
	"setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
	"block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
}

// boundingSetArg turns the CapBnd value of /proc/PID/status (hexadecimal)
// into a setpriv --bounding-set argument that keeps exactly those
// capabilities. Capabilities newer than capNames are dropped.
func boundingSetArg(capBnd string) (string, error) {
	mask, err := strconv.ParseUint(capBnd, 16, 64)
	if err != nil {
		return "", fmt.Errorf("CapBnd %q: %w", capBnd, err)
	}
	var sb strings.Builder
	sb.WriteString("-all")
	for i, name := range capNames {
		if mask&(1<<uint(i)) != 0 {
			sb.WriteString(",+")
			sb.WriteString(name)
		}
	}
	return sb.String(), nil
}

// parseShow parses the output of `systemctl show`: one Key=Value per line.
// Values may contain '='; lines without one are ignored.
func parseShow(out string) map[string]string {
	m := make(map[string]string)
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\n"), "=")
		if ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// sanitizeName turns s (e.g. a test name) into something usable as a
// hostname label, a directory and a cgroup name: lower-case letters, digits
// and single dashes, at most max bytes, never empty.
func sanitizeName(s string, max int) string {
	var sb strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			if dash && sb.Len() > 0 {
				sb.WriteByte('-')
			}
			dash = false
			sb.WriteRune(r)
		default:
			dash = true
		}
		if sb.Len() >= max {
			break
		}
	}
	out := strings.TrimRight(sb.String(), "-")
	if len(out) > max {
		out = strings.TrimRight(out[:max], "-")
	}
	if out == "" {
		out = "box"
	}
	return out
}

// quoteArgs renders a command line for messages.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`;&|<>(){}*?[]#~") {
			q[i] = strconv.Quote(a)
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}
