package systemdtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Files and directories inside a box's state directory.
const (
	stateFile   = "state"       // JSON, see state
	consoleFile = "console.log" // systemd-nspawn's stdout and stderr
	seedDir     = "seed"        // copied onto the box's root before boot
	rwDir       = "rw"          // tmpfs mount point (overlay upper and work)
	rootDir     = "root"        // overlay mount point, the box's /
)

// state is what a box's state file records, so that Sweep can tear down a
// box whose test process died.
type state struct {
	Name    string   `json:"name"`
	Owner   proc     `json:"owner"`   // the test process that booted it
	Nspawn  proc     `json:"nspawn"`  // zero until started
	Init    proc     `json:"init"`    // the box's PID 1; zero until found
	Cgroups []string `json:"cgroups"` // absolute cgroup directories
}

func writeState(dir string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

func readState(dir string) (state, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return st, nil
}

// cgroupRoots returns the mount points of the cgroup hierarchies a box gets
// a cgroup in: on a hybrid host the name=systemd v1 hierarchy and the cgroup2
// one (/sys/fs/cgroup/unified), on a pure cgroup v2 host /sys/fs/cgroup. The
// cgroup2 root comes last.
func cgroupRoots() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	return parseCgroupRoots(string(b))
}

func parseCgroupRoots(mounts string) ([]string, error) {
	var v1, v2 string
	for line := range strings.Lines(mounts) {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		switch {
		case f[2] == "cgroup2" && (f[1] == "/sys/fs/cgroup" || f[1] == "/sys/fs/cgroup/unified"):
			v2 = f[1]
		case f[2] == "cgroup" && slices.Contains(strings.Split(f[3], ","), "name=systemd"):
			v1 = f[1]
		}
	}
	if v2 == "" {
		return nil, errors.New("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	}
	if v1 != "" && v2 == "/sys/fs/cgroup/unified" {
		return []string{v1, v2}, nil
	}
	return []string{v2}, nil
}

// cgroupProcs lists the processes in the cgroup directory dir and below it.
func cgroupProcs(dir string) []proc {
	var out []proc
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, s := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(s, &pid); err != nil {
				continue
			}
			if pr, err := procOf(pid); err == nil {
				out = append(out, pr)
			}
		}
		return nil
	})
	return out
}

// liveProcs is cgroupProcs without dead processes and zombies.
func liveProcs(dirs []string) []proc {
	var out []proc
	for _, d := range dirs {
		for _, p := range cgroupProcs(d) {
			if alive(p) && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// removeCgroup removes dir and every cgroup below it, deepest first. Only
// empty cgroups can be removed.
func removeCgroup(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range slices.Backward(dirs) {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hostMounts returns the mounts of the calling process's mount namespace
// that are at dir or below it, or whose source names the box called name
// (its /run, tmpfs and overlay), wherever they are.
func hostMounts(dir, name string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		// ID parent major:minor root mountpoint options [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		src := ""
		if g := strings.Fields(post); len(g) >= 2 {
			src = g[1]
		}
		ours := name != "" && strings.HasPrefix(src, mountSourcePrefix) && strings.HasSuffix(src, "-"+name)
		if mp == dir || strings.HasPrefix(mp, dir+"/") || ours {
			out = append(out, mp+" ("+src+")")
		}
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space, ...) of
// /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				sb.WriteByte(c)
				i += 3
				continue
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}
