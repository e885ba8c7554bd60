// Command webapp is the reference service built with baton: a small
// service that takes its sockets from systemd by name, reports its state,
// drains on SIGTERM and swaps its binary on reload without dropping a
// connection.
//
//	webapp serve [flags]     serve (see webapp serve -h)
//	webapp reload [flags]    swap the running service's binary and wait
//	webapp status [flags]    what the running service says of itself
//	webapp version [--short] print the version, commit, Go version and platform
//
// webapp serve serves four sockets, each by its FileDescriptorName= or,
// without systemd, at its --listen* address: http (HTTP/1.1 and h2c,
// required), https (TLS with HTTP/2), grpc (gRPC over h2c: the standard
// health service, reflection and webapp.v1.Ticker) and udp (each datagram
// answered with the pid and the same bytes); the last three are optional.
//
// The https certificate and key are read at start from the files tls.crt
// and tls.key that `webapp reload` handed over (it runs as root under
// ExecReload=+ and opens /etc/webapp/tls.crt and tls.key, so that a reload
// rotates the certificate), else from $CREDENTIALS_DIRECTORY
// tls_tls.crt and tls_tls.key (LoadCredential=tls:/etc/webapp), else from
// --tls-cert and --tls-key. Without any, the https socket is held, not
// served, and webapp says so once; a file that is unreadable, garbled or
// not a pair is an error, and webapp does not start.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/systemd"
)

// version overrides the module's VERSION file when set at link time:
// go build -ldflags '-X main.version=1.2.3'.
var version string

func webappVersion() string {
	if version != "" {
		return version
	}
	return baton.Version()
}

const usage = `usage: webapp <command> [flags]

commands:
  serve     serve the systemd sockets http, https, grpc and udp, or --listen addresses
  reload    swap the running webapp for the binary now installed, and wait
  status    print the running webapp's pid, generation, connections and last reload
  version   print the version, commit, Go version and platform (--short: the version only)

run 'webapp <command> -h' for the flags of a command
`

func main() { os.Exit(realMain()) }

// realMain is main without the exit, so that tests can run the real
// program in a child process (see TestMain).
func realMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	return exitCode(err, os.Stderr)
}

func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%swebapp: %s\n", errPrefix(stderr), ue.msg)
		if ue.cmd != "" {
			fmt.Fprintf(stderr, "run 'webapp %s -h' for usage\n", ue.cmd)
		}
		return 2
	case errors.Is(err, errCut):
		return exitCut
	case errors.Is(err, errReported):
		return 1
	default:
		fmt.Fprintf(stderr, "%swebapp: %v\n", errPrefix(stderr), err)
		return 1
	}
}

// errPrefix is the syslog priority prefix for an error line when stderr is
// the journal (as for `webapp reload` run by ExecReload=), so that
// `journalctl -p err` finds failed reloads.
func errPrefix(stderr io.Writer) string {
	if f, ok := stderr.(*os.File); ok && systemd.JournalStream(f) {
		return "<3>"
	}
	return ""
}

// errReported is an error that has been logged already.
var errReported = errors.New("failed (see the log)")

// errCut is a drain that ended at its deadline and cut connections, which
// has been logged already: webapp exits with exitCut, which the unit
// counts as success (SuccessExitStatus=).
var errCut = errors.New("connections cut at the drain deadline (see the log)")

// exitCut is the exit status after a drain that cut connections.
const exitCut = 3

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &usageError{msg: "no command given"}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "reload":
		return reload(ctx, args[1:], stdout, stderr)
	case "status":
		return statusCommand(ctx, args[1:], stdout)
	case "version", "--version":
		return printVersion(args[1:], stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return &usageError{msg: fmt.Sprintf("unknown command %q", args[0])}
	}
}
