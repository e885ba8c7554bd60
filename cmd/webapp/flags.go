package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// usageError is a bad command line: webapp exits 2. With cmd set, the
// error is followed by a line pointing at `webapp <cmd> -h`.
type usageError struct {
	msg string
	cmd string
}

func (e *usageError) Error() string { return e.msg }

// commandLine is the flag set of one subcommand. The flag package prints
// nothing itself: -h prints the usage on stdout, and a bad command line is
// a single usageError.
type commandLine struct {
	fs    *flag.FlagSet
	cmd   string
	usage string
	bad   *usageError // the first bad flag value, in webapp's words
}

func newCommandLine(cmd, usage string) *commandLine {
	c := &commandLine{fs: flag.NewFlagSet("webapp "+cmd, flag.ContinueOnError), cmd: cmd, usage: usage}
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {}
	return c
}

// duration defines a duration flag whose bad values say that a unit is
// needed.
func (c *commandLine) duration(p *time.Duration, name string, value time.Duration, help string) {
	*p = value
	c.fs.Var(&durationValue{name: name, d: p, c: c}, name, help)
}

// errorf is a usage error of this subcommand.
func (c *commandLine) errorf(format string, args ...any) *usageError {
	return &usageError{msg: fmt.Sprintf(format, args...), cmd: c.cmd}
}

// parse parses args, with no positional arguments allowed. For -h or
// --help it prints the usage on stdout and returns flag.ErrHelp.
func (c *commandLine) parse(args []string, stdout io.Writer) error {
	err := c.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(stdout, c.usage)
		c.fs.SetOutput(stdout)
		c.fs.PrintDefaults()
		return flag.ErrHelp
	case c.bad != nil:
		return c.bad
	case err != nil:
		return c.errorf("%v", err)
	case c.fs.NArg() > 0:
		return c.errorf("%s: unexpected argument %q", c.cmd, c.fs.Arg(0))
	}
	return nil
}

// durationValue is a time.Duration flag.
type durationValue struct {
	name string
	d    *time.Duration
	c    *commandLine
}

func (v *durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		if v.c.bad == nil {
			v.c.bad = v.c.errorf("--%s %q: want a duration with a unit, such as 5s or 500ms", v.name, s)
		}
		return err
	}
	*v.d = d
	return nil
}

// checkListen checks a --listen address: host:port with a numeric port, or
// the absolute path of a unix socket.
func checkListen(addr string) error {
	switch {
	case addr == "":
		return errors.New("empty address")
	case strings.HasPrefix(addr, "/"):
		if filepath.Clean(addr) == "/" {
			return errors.New("want a unix socket path, not /")
		}
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port (such as 127.0.0.1:8080 or :8080) or the absolute path of a unix socket")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	return nil
}
