package upgrade

import (
	"fmt"
	"math"
	"os"
	"strings"
)

// File is a file that a reload request carries to the new generation it
// starts (Request, Handoff.Files), such as a rotated TLS certificate that
// only root can read.
type File struct {
	// Name identifies the file to the new generation: 1 to 255 printable
	// ASCII characters without ':' or space, like systemd's FDNAME=.
	Name string
	// File is an open regular file.
	File *os.File
}

const (
	// maxFiles bounds the files that one reload request carries.
	maxFiles = 16
	// maxFileName bounds the length of a file's name.
	maxFileName = 255
)

// Environment entries that describe the files passed to a new generation:
// their names, separated by ':', and the descriptor of the first one; the
// others follow it in order.
const (
	envFiles   = "BATON_FILES"
	envFilesFD = "BATON_FILES_FD"
)

// checkFileName reports why name cannot name a passed file.
func checkFileName(name string) error { return checkName("file name", name) }

// checkName reports why name cannot name a passed descriptor (what it
// is: "file name"): systemd's rules for FDNAME=.
func checkName(what, name string) error {
	if name == "" || len(name) > maxFileName {
		return fmt.Errorf("%s %.64q: want 1 to %d characters", what, name, maxFileName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' || c == ':' {
			return fmt.Errorf("%s %.64q: want printable ASCII without ':' or space", what, name)
		}
	}
	return nil
}

// checkFileNames reports why names cannot name the files of one request:
// more than maxFiles, a bad name, or one name twice.
func checkFileNames(names []string) error {
	if len(names) > maxFiles {
		return fmt.Errorf("%d files: at most %d", len(names), maxFiles)
	}
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if err := checkFileName(name); err != nil {
			return err
		}
		if seen[name] {
			return fmt.Errorf("file name %q: given twice", name)
		}
		seen[name] = true
	}
	return nil
}

// reloadLine is the request line, without its newline, of a reload that
// carries files with the given names: "reload", or "reload a:b".
func reloadLine(names []string) string {
	if len(names) == 0 {
		return verbReload
	}
	return verbReload + " " + strings.Join(names, ":")
}

// The verbs of the control protocol.
const (
	verbReload = "reload"
	verbPID    = "pid"
	verbStatus = "status"
)

// parseRequest reads a request line (without its newline): "pid",
// "reload", or "reload " and the names of the files it carries, separated
// by ':'. Anything else is an error meant for the answer line.
func parseRequest(line string) (verb string, names []string, err error) {
	switch line {
	case verbPID, verbReload, verbStatus:
		return line, nil, nil
	}
	list, ok := strings.CutPrefix(line, verbReload+" ")
	if !ok {
		return "", nil, fmt.Errorf("unknown request %.64q: want reload, pid or status", line)
	}
	names = strings.Split(list, ":")
	if err := checkFileNames(names); err != nil {
		return "", nil, fmt.Errorf("bad request: %w", err)
	}
	return verbReload, names, nil
}

// inheritedFiles reads BATON_FILES and BATON_FILES_FD through lookup, for
// a process that took the given handshake and control descriptors (-1 for
// none): the names of the passed files and the descriptor of the first,
// or nil and -1 when none were passed. Both variables are set or neither;
// the names are checked as a request's are, and the descriptors they take
// must not include the handshake's or the control socket's.
func inheritedFiles(lookup func(string) (string, bool), handshake, control int) (names []string, first int, err error) {
	get := func(k string) string { v, _ := lookup(k); return v }
	namesv, fdv := get(envFiles), get(envFilesFD)
	switch {
	case namesv == "" && fdv == "":
		return nil, -1, nil
	case namesv == "":
		return nil, -1, fmt.Errorf("upgrade: %s=%q without %s", envFilesFD, fdv, envFiles)
	case fdv == "":
		return nil, -1, fmt.Errorf("upgrade: %s=%q without %s", envFiles, namesv, envFilesFD)
	}
	names = strings.Split(namesv, ":")
	if err := checkFileNames(names); err != nil {
		return nil, -1, fmt.Errorf("upgrade: %s=%.300q: %w", envFiles, namesv, err)
	}
	if first, err = descriptor(envFilesFD, fdv); err != nil {
		return nil, -1, err
	}
	last := int64(first) + int64(len(names)) - 1
	if last > math.MaxInt32 {
		return nil, -1, fmt.Errorf("upgrade: %s=%q: %d files do not fit below descriptor %d", envFilesFD, fdv, len(names), math.MaxInt32)
	}
	for _, taken := range []struct {
		fd   int
		name string
	}{{handshake, envUpgradeFD}, {control, envControlFD}} {
		if taken.fd >= first && int64(taken.fd) <= last {
			return nil, -1, fmt.Errorf("upgrade: %s=%q with %d files takes the descriptor of %s", envFilesFD, fdv, len(names), taken.name)
		}
	}
	return names, first, nil
}

// checkFiles reports, before anything is sent, why files cannot be
// carried by a reload request.
func checkFiles(files []File) error {
	if err := checkFileNames(fileNames(files)); err != nil {
		return fmt.Errorf("upgrade: cannot pass the files: %w", err)
	}
	for _, f := range files {
		if f.File == nil {
			return fmt.Errorf("upgrade: cannot pass file %q: no file", f.Name)
		}
		fi, err := f.File.Stat()
		if err != nil {
			return fmt.Errorf("upgrade: cannot pass file %q: %w", f.Name, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("upgrade: cannot pass file %q (%s): not a regular file (%s)", f.Name, f.File.Name(), kind(fi.Mode()))
		}
	}
	return nil
}

// kind names the type of a file that is not a regular one.
func kind(m os.FileMode) string {
	switch m.Type() {
	case os.ModeDir:
		return "a directory"
	case os.ModeSymlink:
		return "a symbolic link"
	case os.ModeNamedPipe:
		return "a pipe"
	case os.ModeSocket:
		return "a socket"
	case os.ModeDevice:
		return "a block device"
	case os.ModeDevice | os.ModeCharDevice:
		return "a character device"
	}
	return "of mode " + m.String()
}

// fileNames are the names of files, in order.
func fileNames(files []File) []string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	return names
}

// closeFiles closes the files of a request.
func closeFiles(files []File) {
	for _, f := range files {
		f.File.Close()
	}
}

// Files returns the files passed with the reload request that started
// this generation (see Request), in the order the request named them; nil
// for a nil Handoff or when the request passed none. The files are this
// process's to read and close. Every call returns the same *os.File
// values, which share one file offset: a reader that may not be the first
// should use ReadAt, or seek to the start.
func (h *Handoff) Files() []File {
	if h == nil || len(h.files) == 0 {
		return nil
	}
	return append([]File(nil), h.files...)
}
