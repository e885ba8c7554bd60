package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"time"
)

// commit and commitDate name the commit webapp is built from when the build
// carries no VCS stamp, as the packages (built with -buildvcs=false) do: set
// at link time, -ldflags '-X main.commit=96fe289c1a2b -X main.commitDate=2026-12-02'.
var commit, commitDate string

// printVersion is `webapp version`: the version, the commit it was built
// from and when that commit was made, the Go version and the platform; with
// --short the version alone, for scripts.
func printVersion(args []string, stdout io.Writer) error {
	cl := newCommandLine("version", "usage: webapp version [--short]")
	short := cl.fs.Bool("short", false, "print the version only")
	if err := cl.parse(args, stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *short {
		fmt.Fprintln(stdout, webappVersion())
		return nil
	}
	info, _ := debug.ReadBuildInfo()
	fmt.Fprintln(stdout, versionLine(webappVersion(), info, commit, commitDate))
	return nil
}

// versionLine is the long form of `webapp version`, such as
// "webapp 0.1.0 (commit 96fe289c1a2b of 2026-12-02, go1.26.8, linux/amd64)".
// The commit comes from the build's VCS stamp, else from linkedCommit and
// linkedDate: "commit unknown" for builds with neither (go build
// -buildvcs=false, go run, tests).
func versionLine(version string, info *debug.BuildInfo, linkedCommit, linkedDate string) string {
	commit := "commit unknown"
	if linkedCommit != "" {
		commit = "commit " + linkedCommit
		if linkedDate != "" {
			commit += " of " + linkedDate
		}
	}
	if info != nil {
		var rev, when string
		var modified bool
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" {
			commit = "commit " + rev[:min(len(rev), 12)]
			if modified {
				commit += "-dirty"
			}
			if t, err := time.Parse(time.RFC3339, when); err == nil {
				commit += " of " + t.UTC().Format(time.DateOnly)
			}
		}
	}
	goVersion := runtime.Version()
	if info != nil && info.GoVersion != "" {
		goVersion = info.GoVersion
	}
	return fmt.Sprintf("webapp %s (%s, %s, %s/%s)", version, commit, goVersion, runtime.GOOS, runtime.GOARCH)
}
