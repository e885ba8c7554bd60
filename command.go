package baton

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/baton-dev/baton/upgrade"
)

// Main is a service's whole command line, so that its main function can be
// one call: baton.Main(opts, servers...). It reads os.Args and exits:
//
//	NAME [serve]    run the servers (Run) until SIGTERM or SIGINT; SIGHUP
//	                swaps in the binary now installed
//	NAME reload     ask the running service to swap in the binary now
//	                installed, and return when the swap succeeded (exit 0)
//	                or failed (exit 1, with the reason): the command for
//	                ExecReload=
//	NAME version    print opts.Version
//
// Both serve and reload find the control socket at opts.Control, by
// default $RUNTIME_DIRECTORY/control.sock (RuntimeDirectory= in the unit).
// A reload therefore never starts a second server: the unit's
// ExecReload=/usr/bin/NAME reload talks to the one that runs.
//
// Main exits 0 after a clean stop, 1 when the service could not start or
// its drain cut connections (the error is printed on standard error, and
// logged through opts.Logger when it is set), and 2 for a command line it
// does not understand.
func Main(opts Options, servers ...*Server) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := command(ctx, os.Args, os.Stdout, os.Stderr, opts, servers)
	stop()
	os.Exit(code)
}

// command is Main without the signals and the exit, for tests.
func command(ctx context.Context, argv []string, stdout, stderr io.Writer, opts Options, servers []*Server) int {
	name := "service"
	if len(argv) > 0 {
		name = filepath.Base(argv[0])
	}
	args := argv[min(1, len(argv)):]
	sub := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		sub, args = args[0], args[1:]
	}
	var err error
	switch sub {
	case "serve":
		err = commandServe(ctx, name, args, stderr, opts, servers)
	case "reload":
		err = commandReload(ctx, name, args, stdout, stderr, opts)
	case "version":
		if len(args) > 0 {
			err = usageErrorf("%s version: unexpected arguments %q", name, args)
			break
		}
		v := opts.Version
		if v == "" {
			v = Version()
		}
		fmt.Fprintf(stdout, "%s %s\n", name, v)
	case "help", "-h", "--help":
		fmt.Fprintf(stdout, commandUsage, name, name, name)
	default:
		err = usageErrorf("unknown command %q", sub)
	}
	var ue usageError
	var logged loggedError
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &logged):
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %s\n", name, ue.msg)
		fmt.Fprintf(stderr, commandUsage, name, name, name)
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
}

const commandUsage = `usage: %s [serve]   run the service (SIGHUP swaps in the installed binary; SIGTERM drains and stops)
       %s reload    swap in the installed binary and wait for the outcome (for ExecReload=)
       %s version   print the version
`

// usageError is a command line Main does not understand.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// commandServe is NAME serve: Run with SIGHUP as the reload signal. The
// new generation a reload starts is the same binary with the same
// arguments (os.Args[1:], serve included).
func commandServe(ctx context.Context, name string, args []string, stderr io.Writer, opts Options, servers []*Server) error {
	if len(args) > 0 {
		return usageErrorf("%s serve: unexpected arguments %q (the servers are configured in the program)", name, args)
	}
	if opts.Reload == nil {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		opts.Reload = hup
	}
	err := Run(ctx, opts, servers...)
	if err != nil && opts.Logger != nil {
		opts.Logger.Errorf("%v", err)
		return loggedError{err}
	}
	return err
}

// loggedError is an error already given to the Logger: Main does not
// print it again.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// commandReload is NAME reload: a request on the control socket that
// returns once the new generation is serving, or with the reason it is
// not.
func commandReload(ctx context.Context, name string, args []string, stdout, stderr io.Writer, opts Options) error {
	opts = withDefaults(opts)
	fs := flag.NewFlagSet(name+" reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", opts.Control, "the running service's control socket `path`")
	timeout := fs.Duration("timeout", opts.ReloadTimeout+10*time.Second, "give up waiting for the outcome after this `duration`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	switch {
	case fs.NArg() > 0:
		return usageErrorf("%s reload: unexpected arguments %q", name, fs.Args())
	case *timeout <= 0:
		return usageErrorf("%s reload: --timeout %v: must be positive", name, *timeout)
	case *control == "":
		return fmt.Errorf("reload: no control socket: RUNTIME_DIRECTORY is not set (set RuntimeDirectory= in the unit, pass --control PATH, or send the service SIGHUP)")
	}
	stopping := ctx
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := upgrade.Request(ctx, *control)
	if err != nil && (errors.Is(err, upgrade.ErrStopping) || stopping.Err() != nil) {
		// A stop supersedes the reload: not a failure of the service.
		fmt.Fprintf(stderr, "%s reload: abandoned, the service is stopping\n", name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reload failed: %w", err)
	}
	fmt.Fprintf(stdout, "reloaded: pid %d is serving\n", res.PID)
	return nil
}
