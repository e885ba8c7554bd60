// Command loadgen sends HTTP load to one URL with concurrent clients that
// never retry, optionally runs a shell command on a schedule meanwhile, and
// prints what happened. It exits 1 if any request failed, 2 on bad flags.
//
// Usage:
//
//	loadgen [-url URL] [-c 32] [-d 10s] [-n 0] [-mode keepalive|newconn]
//	        [-timeout 5s] [-json] [-samples FILE]
//	        [-disrupt-cmd CMD -disrupt-start 1s -disrupt-every 1s -disrupt-count 0 -tail 0]
//
// The disruption command runs with sh -c, its index (0-based) in
// LOADGEN_EVENT, its output on stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// errFailed reports that the load ran but some requests failed.
var errFailed = errors.New("some requests failed")

// usageError is a bad command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

const usageLine = "usage: loadgen [-url URL] [-c N] [-d DUR] [-n N] [-mode keepalive|newconn] [-timeout DUR] [-json] [-samples FILE] [-disrupt-cmd CMD [-disrupt-start DUR] [-disrupt-every DUR] [-disrupt-count N] [-tail DUR]]"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "loadgen: %v\n%s\n", ue.err, usageLine)
		return 2
	}
	fmt.Fprintf(stderr, "loadgen: %v\n", err)
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		target   = fs.String("url", "http://127.0.0.1:8080/", "`URL` to GET (http only)")
		clients  = fs.Int("c", load.DefaultClients, "concurrent clients")
		duration = fs.Duration("d", load.DefaultDuration, "duration of the load")
		maxReq   = fs.Int64("n", 0, "stop after this many requests (0: no limit)")
		mode     = fs.String("mode", "keepalive", "keepalive (one connection per client) or newconn (one per request)")
		timeout  = fs.Duration("timeout", load.DefaultTimeout, "per-request timeout")
		asJSON   = fs.Bool("json", false, "print the summary as JSON")
		samples  = fs.String("samples", "", "write per-request samples as CSV to `FILE`")
		dcmd     = fs.String("disrupt-cmd", "", "shell `command` to run on a schedule during the load")
		dstart   = fs.Duration("disrupt-start", time.Second, "offset of the first disruption")
		devery   = fs.Duration("disrupt-every", time.Second, "period of the disruptions")
		dcount   = fs.Int("disrupt-count", 0, "number of disruptions (0: until the load stops)")
		tail     = fs.Duration("tail", 0, "stop this long after the last disruption (needs -disrupt-count)")
		margin   = fs.Duration("margin", load.DefaultMargin, "disruption window margin")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, usageLine)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	m, err := load.ParseMode(*mode)
	if err != nil {
		return usageError{err}
	}
	if *clients < 1 || *duration <= 0 || *timeout <= 0 || *maxReq < 0 || *dcount < 0 || *tail < 0 || *margin <= 0 {
		return usageError{errors.New("-c, -d, -timeout and -margin must be positive, -n, -disrupt-count and -tail not negative")}
	}
	opts := load.Options{
		Clients:     *clients,
		Mode:        m,
		Duration:    *duration,
		MaxRequests: *maxReq,
		Timeout:     *timeout,
		Tail:        *tail,
		Margin:      *margin,
	}
	if *dcmd != "" {
		opts.Schedule = load.Schedule{
			Start: *dstart,
			Every: *devery,
			Count: *dcount,
			Run:   shellCommand(*dcmd, stderr),
		}
	}
	res, err := load.Run(ctx, *target, opts)
	if res == nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("encoding summary: %w", err)
		}
	} else {
		fmt.Fprint(stdout, res)
	}
	if *samples != "" {
		if err := writeSamples(*samples, res); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	if res.Failed() > 0 {
		return fmt.Errorf("%d of %d requests failed: %w", res.Failed(), res.Requests, errFailed)
	}
	return nil
}

// shellCommand returns a disruption that runs cmd with sh -c.
func shellCommand(cmd string, stderr io.Writer) func(context.Context, int) error {
	return func(ctx context.Context, i int) error {
		c := exec.CommandContext(ctx, "sh", "-c", cmd)
		c.Env = append(os.Environ(), "LOADGEN_EVENT="+strconv.Itoa(i))
		c.Stdout, c.Stderr = stderr, stderr
		c.WaitDelay = 2 * time.Second
		if err := c.Run(); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		return nil
	}
}

func writeSamples(path string, res *load.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := res.WriteSamples(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
