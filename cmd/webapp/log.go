package main

import (
	"fmt"
	"io"
	stdlog "log"
	"os"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/baton-dev/baton/systemd"
)

// newLogger configures logrus for webapp. Under journald (stderr is the
// JOURNAL_STREAM) lines carry no timestamp and start with a syslog
// priority prefix such as <4>, which journald turns into the entry's
// priority, so that `journalctl -p warning` shows warnings and errors only.
func newLogger(out io.Writer, format, level string) (*logrus.Logger, error) {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, &usageError{msg: fmt.Sprintf("--log-level %q: want one of panic, fatal, error, warn, info, debug, trace", level), cmd: "serve"}
	}
	f, _ := out.(*os.File)
	journal := systemd.JournalStream(f)
	var fm logrus.Formatter
	switch format {
	case "text":
		fm = &logrus.TextFormatter{DisableTimestamp: journal, FullTimestamp: true, DisableColors: true}
	case "json":
		fm = &logrus.JSONFormatter{DisableTimestamp: journal}
	default:
		return nil, &usageError{msg: fmt.Sprintf("--log-format %q: want text or json", format), cmd: "serve"}
	}
	if journal {
		fm = &journalFormatter{fm}
	}
	return &logrus.Logger{Out: out, Formatter: fm, Hooks: make(logrus.LevelHooks), Level: lvl, ExitFunc: os.Exit}, nil
}

// journalFormatter prefixes each line with its syslog priority.
type journalFormatter struct{ inner logrus.Formatter }

func (f *journalFormatter) Format(e *logrus.Entry) ([]byte, error) {
	b, err := f.inner.Format(e)
	if err != nil {
		return nil, err
	}
	return append([]byte(fmt.Sprintf("<%d>", syslogPriority(e.Level))), b...), nil
}

// syslogPriority maps logrus levels to syslog priorities (sd-daemon(3)).
func syslogPriority(l logrus.Level) int {
	switch l {
	case logrus.PanicLevel, logrus.FatalLevel:
		return 2 // crit
	case logrus.ErrorLevel:
		return 3 // err
	case logrus.WarnLevel:
		return 4 // warning
	case logrus.InfoLevel:
		return 6 // info
	default:
		return 7 // debug
	}
}

// newStdLog routes net/http's own messages (TLS handshake errors, panics
// in handlers) to the logger at warning level.
// Each message is one Write, logged as it comes: logrus's own
// WriterLevel would hold a pipe, a goroutine and a 64 KiB line buffer for
// the process's life.
func newStdLog(l *logrus.Logger) *stdlog.Logger {
	return stdlog.New(warnWriter{l}, "", 0)
}

// warnWriter logs each Write at warning level, without its final newline.
type warnWriter struct{ l *logrus.Logger }

func (w warnWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
