package main

import (
	"os"
	"strconv"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/systemd"
)

// events turns baton's events into log entries. Under journald each is a
// native journal entry with the kind's MESSAGE_ID and BATON_* fields, so
// that `journalctl -u webapp BATON_EVENT=reload-failed` finds every failed
// reload; elsewhere it is a logrus entry with the same fields (in
// lower case), in the --log-format's shape.
type events struct {
	log     *logrus.Logger
	journal bool
	// also, if set, receives every event too (the metrics).
	also func(baton.Event)
}

func newEvents(log *logrus.Logger, stderr *os.File) *events {
	return &events{log: log, journal: systemd.JournalStream(stderr) && journal.Enabled()}
}

// fields are an event's BATON_* fields: the kind, the generation, the
// counts and the reason, each only where it says something.
func eventFields(e baton.Event) map[string]string {
	f := map[string]string{
		"BATON_EVENT":          string(e.Kind),
		"BATON_PID":            strconv.Itoa(e.PID),
		"BATON_GENERATION":     strconv.Itoa(e.Generation),
		"BATON_RELOADS":        strconv.Itoa(e.Reloads),
		"BATON_FAILED_RELOADS": strconv.Itoa(e.FailedReloads),
	}
	switch e.Kind {
	case baton.EventReloadCommitted, baton.EventReloadFailed:
		f["BATON_DURATION_USEC"] = strconv.FormatInt(e.Duration.Microseconds(), 10)
		if e.NewPID != 0 {
			f["BATON_NEW_PID"] = strconv.Itoa(e.NewPID)
		}
	case baton.EventDrainStarted:
		f["BATON_CONNECTIONS"] = strconv.Itoa(e.Connections)
		f["BATON_STOPPING"] = strconv.FormatBool(e.Stopping)
	case baton.EventDrainFinished:
		f["BATON_DURATION_USEC"] = strconv.FormatInt(e.Duration.Microseconds(), 10)
		f["BATON_CUT"] = strconv.Itoa(e.Cut)
		f["BATON_MOVED"] = strconv.Itoa(e.Moved)
		f["BATON_STOPPING"] = strconv.FormatBool(e.Stopping)
	}
	if e.Err != nil {
		f["BATON_ERROR"] = e.Err.Error()
	}
	return f
}

func (ev *events) handle(e baton.Event) {
	if ev.also != nil {
		ev.also(e)
	}
	fields := eventFields(e)
	if ev.journal {
		vars := map[string]string{"SYSLOG_IDENTIFIER": "webapp"}
		if id := e.Kind.MessageID(); id != "" {
			vars["MESSAGE_ID"] = id
		}
		for k, v := range fields {
			vars[k] = v
		}
		prio := journal.PriInfo
		if e.Warning() {
			prio = journal.PriWarning
		}
		if err := journal.Send(e.Message, prio, vars); err == nil {
			return
		}
		// The journal's socket is gone: the line on stderr still gets there.
	}
	lf := make(logrus.Fields, len(fields))
	for k, v := range fields {
		lf[lowerField(k)] = v
	}
	entry := ev.log.WithFields(lf)
	if e.Warning() {
		entry.Warn(e.Message)
		return
	}
	entry.Info(e.Message)
}

// lowerField turns BATON_FAILED_RELOADS into failed_reloads.
func lowerField(k string) string {
	const prefix = "BATON_"
	if len(k) > len(prefix) && k[:len(prefix)] == prefix {
		k = k[len(prefix):]
	}
	b := []byte(k)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
