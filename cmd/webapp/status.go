package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-dev/baton"
)

// statusCommand is `webapp status`: what the running generation says of itself
// on the control socket.
func statusCommand(ctx context.Context, args []string, stdout io.Writer) error {
	cl := newCommandLine("status", "usage: webapp status [--control PATH] [--json]")
	control := cl.fs.String("control", baton.ControlPath(), "the running service's control socket `path` (default $RUNTIME_DIRECTORY/control.sock, as set by systemd)")
	asJSON := cl.fs.Bool("json", false, "print the status as JSON")
	if err := cl.parse(args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	switch {
	case *control == "":
		return cl.errorf("status: no control socket: RUNTIME_DIRECTORY is not set (not run by systemd); pass --control PATH, for example /run/webapp/control.sock")
	case !filepath.IsAbs(*control):
		return cl.errorf("--control %q: must be an absolute path", *control)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := baton.QueryStatus(ctx, *control)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprint(stdout, formatStatus(st, time.Now()))
	return nil
}

// formatStatus is the status for people.
func formatStatus(st baton.Status, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "webapp %s: pid %d, generation %d, %s, up %v (since %s)\n", orUnknown(st.Version), st.PID, st.Generation, st.State,
		now.Sub(st.Started).Round(time.Second), st.Started.UTC().Format(time.RFC3339))
	for _, s := range st.Sockets {
		fmt.Fprintf(&b, "  %-6s %-24s %d open, %d in flight\n", s.Name, strings.Join(s.Addresses, ", "), s.Connections, s.InFlight)
	}
	fmt.Fprintf(&b, "reloads: %d, failed: %d", st.Reloads, st.FailedReloads)
	if r := st.LastReload; r != nil {
		ago := now.Sub(r.At).Round(time.Second)
		if r.OK {
			fmt.Fprintf(&b, "; last: ok %v ago, pid %d took over in %v", ago, r.NewPID, r.Duration.Round(time.Millisecond))
		} else {
			fmt.Fprintf(&b, "; last: failed %v ago after %v: %s", ago, r.Duration.Round(time.Millisecond), r.Error)
		}
	} else {
		b.WriteString("; none by this generation")
	}
	b.WriteString("\n")
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "(version unknown)"
	}
	return s
}
