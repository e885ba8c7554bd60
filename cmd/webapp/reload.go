package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/upgrade"
)

// reload is `webapp reload`: ExecReload= of webapp.service. It asks the
// running generation to swap in the binary now installed and returns only
// when the swap has succeeded (exit 0) or failed (exit 1, with the reason).
// When the TLS certificate and key exist it opens them (ExecReload=+ runs
// it as root) and hands them to the new generation with the request, so
// that a reload rotates the certificate.
func reload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cl := newCommandLine("reload", "usage: webapp reload [--control PATH] [--timeout D] [--tls-cert FILE] [--tls-key FILE]")
	control := cl.fs.String("control", baton.ControlPath(), "the running service's control socket `path` (default $RUNTIME_DIRECTORY/control.sock, as set by systemd)")
	var timeout time.Duration
	cl.duration(&timeout, "timeout", 55*time.Second, "give up waiting for the outcome after this `duration` (below the unit's TimeoutStartSec=60s, which bounds ExecReload=)")
	certFile := cl.fs.String("tls-cert", defaultCertFile, "the https certificate `file` handed to the new generation, if it exists (PEM)")
	keyFile := cl.fs.String("tls-key", defaultKeyFile, "the https key `file` handed to the new generation with the certificate (PEM)")
	if err := cl.parse(args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	switch {
	case timeout <= 0:
		return cl.errorf("--timeout %v: must be positive", timeout)
	case *control == "":
		return cl.errorf("reload: no control socket: RUNTIME_DIRECTORY is not set (not run by systemd); pass --control PATH, or send SIGHUP to webapp")
	case !filepath.IsAbs(*control):
		return cl.errorf("--control %q: must be an absolute path", *control)
	case *certFile == "":
		return cl.errorf("--tls-cert: empty path")
	case *keyFile == "":
		return cl.errorf("--tls-key: empty path")
	}
	files, err := openCertificate(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("reload refused: %w", err)
	}
	defer func() {
		for _, f := range files {
			f.file.Close()
		}
	}()
	stopping := ctx // canceled by SIGTERM: systemd is stopping the service
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := requestReload(ctx, *control, files)
	if err != nil && (errors.Is(err, upgrade.ErrStopping) || stopping.Err() != nil) {
		// A stop supersedes the reload (systemctl reports the job as
		// canceled): not a failure of the service.
		fmt.Fprintln(stderr, "webapp reload: abandoned, the service is stopping")
		return nil
	}
	if err != nil {
		return fmt.Errorf("reload failed: %w", err)
	}
	if res.Duration == 0 {
		fmt.Fprintf(stdout, "reloaded: pid %d is serving (the old generation went away during the swap)\n", res.PID)
		return nil
	}
	fmt.Fprintf(stdout, "reloaded: pid %d is serving (swap took %v)\n", res.PID, res.Duration.Round(time.Millisecond))
	return nil
}

// openCertificate opens the certificate and key to hand over, once it has
// checked that they make a pair (the new generation checks again). Neither
// there: nothing to hand over. Only one there, unreadable or no pair: an
// error, and the service goes on as it is.
func openCertificate(certPath, keyPath string) ([]namedFile, error) {
	var files []namedFile
	closeAll := func() {
		for _, f := range files {
			f.file.Close()
		}
	}
	pems := make([]pemFile, 2)
	for i, p := range []struct{ name, path string }{{certName, certPath}, {keyName, keyPath}} {
		pems[i].name = p.path
		f, err := os.Open(p.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("TLS file %s: %w (webapp reload must read it: ExecReload=+ runs it as root)", p.path, unwrapPath(err))
		}
		files = append(files, namedFile{name: p.name, file: f})
		if pems[i].data, err = readPEM(f, p.path); err != nil {
			closeAll()
			return nil, err
		}
		pems[i].ok = true
	}
	if len(files) == 0 {
		return nil, nil
	}
	if _, err := parsePair(pems[0], pems[1]); err != nil {
		closeAll()
		return nil, err
	}
	return files, nil
}
