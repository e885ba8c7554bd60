package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/upgrade"
)

// reload is `webapp reload`: ExecReload= of webapp.service. It asks the
// running generation to swap in the binary now installed and returns only
// when the swap has succeeded (exit 0) or failed (exit 1, with the reason).
func reload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cl := newCommandLine("reload", "usage: webapp reload [--control PATH] [--timeout D]")
	control := cl.fs.String("control", baton.ControlPath(), "the running service's control socket `path` (default $RUNTIME_DIRECTORY/control.sock, as set by systemd)")
	var timeout time.Duration
	cl.duration(&timeout, "timeout", 55*time.Second, "give up waiting for the outcome after this `duration` (below the unit's TimeoutStartSec=60s, which bounds ExecReload=)")
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
	}
	stopping := ctx // canceled by SIGTERM: systemd is stopping the service
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := upgrade.Request(ctx, *control)
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
