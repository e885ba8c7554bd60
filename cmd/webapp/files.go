package main

import (
	"context"
	"errors"
	"os"

	"github.com/baton-dev/baton/upgrade"
)

// The two ends of the files a reload carries: `webapp reload` opens the
// current certificate and key (it runs as root, ExecReload=+) and sends
// them with its request on the control socket; the new generation finds
// them by name. This is how a reload rotates the certificate although
// LoadCredential= copied it only when the service started.

// namedFile is an open file a reload hands over, under its name.
type namedFile struct {
	name string
	file *os.File
}

// handedOverFiles returns the files, by name, that the reload which
// started this generation carried; none on a fresh start. The caller
// closes them.
func handedOverFiles() (map[string]*os.File, error) {
	h, err := upgrade.Inherited()
	if errors.Is(err, upgrade.ErrNotInherited) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	files := map[string]*os.File{}
	for _, f := range h.Files() {
		files[f.Name] = f.File
	}
	return files, nil
}

// requestReload asks the service on the control socket to swap in the
// binary now installed, carrying files, and waits for the outcome.
func requestReload(ctx context.Context, control string, files []namedFile) (upgrade.Result, error) {
	ufs := make([]upgrade.File, 0, len(files))
	for _, f := range files {
		ufs = append(ufs, upgrade.File{Name: f.name, File: f.file})
	}
	return upgrade.Request(ctx, control, ufs...)
}
