package baton

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EventKind names what happened to the service (see Event).
type EventKind string

// The kinds of Event, in the order of a generation's life.
const (
	// EventStarted: the sockets are taken (from systemd, the previous
	// generation or an own bind); the health check comes next.
	EventStarted EventKind = "started"
	// EventReady: every server serves and systemd was told READY=1.
	EventReady EventKind = "ready"
	// EventReloadStarted: a reload (SIGHUP, or a request on the control
	// socket) starts a new generation.
	EventReloadStarted EventKind = "reload-started"
	// EventReloadCommitted: the new generation (NewPID) serves and is the
	// main process; this one drains next.
	EventReloadCommitted EventKind = "reload-committed"
	// EventReloadFailed: the new generation did not take over (Err says
	// why); this one goes on serving.
	EventReloadFailed EventKind = "reload-failed"
	// EventDrainStarted: this generation stopped taking work, at a stop
	// (Stopping) or after a hand-over; Connections are open.
	EventDrainStarted EventKind = "drain-started"
	// EventDrainFinished: the drain is over; Cut connections were cut at
	// its deadline (Err wraps drain.ErrCut then).
	EventDrainFinished EventKind = "drain-finished"
	// EventWatchdogFailed: the health check failed, and the watchdog is
	// not pinged until it passes again (EventWatchdogRecovered).
	EventWatchdogFailed EventKind = "watchdog-failed"
	// EventWatchdogRecovered: the health check passes again.
	EventWatchdogRecovered EventKind = "watchdog-recovered"
)

// messageIDs are the events' journal MESSAGE_IDs, one per kind, stable
// across versions (journalctl MESSAGE_ID=... finds every event of a kind).
var messageIDs = map[EventKind]string{
	EventStarted:           "264879228b1447afa7ff93c6e2f4f255",
	EventReady:             "ba24b9ad858543e59b448b171436e8fa",
	EventReloadStarted:     "630dad3dd9c24e859b4f8de27ab56d77",
	EventReloadCommitted:   "a5d37d247b9c46669ae3ae8a8f9dd5d4",
	EventReloadFailed:      "d7693603f0b24a32911d2cb55e3c2cc5",
	EventDrainStarted:      "c0c07f604db6492bab90420c94e3f235",
	EventDrainFinished:     "abc8124f4cd14e2db942f807acf4a5fd",
	EventWatchdogFailed:    "b91d72ddb4c7464283a1afd8975700f7",
	EventWatchdogRecovered: "c7014fb6871a4be3a25d2465cec0fb92",
}

// MessageID is the kind's journal MESSAGE_ID: 128 bits in hex, stable
// across versions. An unknown kind has none.
func (k EventKind) MessageID() string { return messageIDs[k] }

// Warning reports whether an event is a problem: a failed reload, a
// failing health check, a drain that cut connections.
func (e Event) Warning() bool {
	return e.Kind == EventReloadFailed || e.Kind == EventWatchdogFailed || e.Cut > 0
}

// Event is something that happened to the service, for logs and metrics
// (Options.OnEvent): its Message, and the same as fields. Without OnEvent
// the Logger gets the Message.
type Event struct {
	Kind    EventKind
	Time    time.Time
	Message string
	// PID is this process; Generation counts the generations of the
	// service since it was started: 1, then one more with each reload.
	PID, Generation int
	// Reloads and FailedReloads count the reloads of the service since it
	// was started, this one included, over all its generations.
	Reloads, FailedReloads int
	// NewPID is the new generation's process (reload events).
	NewPID int
	// Duration: of the reload (start to commit or failure), or of the
	// drain.
	Duration time.Duration
	// Connections open when the drain started; Cut: connections cut at
	// its deadline; Moved: connections handed to the new generation
	// (the drain after a reload).
	Connections, Cut, Moved int
	// Stopping says the drain is a stop, not the end of a hand-over.
	Stopping bool
	// Err is the reason of a failed reload, a failed health check or a
	// drain that cut connections.
	Err error
}

// The hand-over tells the new generation where the service stands, in
// variables that package upgrade passes and drops at the next hand-over.
const (
	envGeneration = "BATON_GENERATION" // the new generation's number
	envReloads    = "BATON_RELOADS"    // "<reloads> <failed reloads>", the new one's counted
)

// lineage is where this generation stands in the service's history.
type lineage struct {
	generation    int
	reloads       int // committed, the one that made this generation included
	failedReloads int
	mu            sync.Mutex // reload outcomes come from several goroutines
	onEvent       func(Event)
	log           Logger
	pid           int
	lastReload    *Event // the latest reload outcome of this generation
}

// inheritedLineage reads the variables of a hand-over; a fresh start is
// generation 1 with no reload.
func inheritedLineage(handedOver bool, onEvent func(Event), log Logger) *lineage {
	l := &lineage{generation: 1, onEvent: onEvent, log: log, pid: os.Getpid()}
	if !handedOver {
		return l
	}
	if g, err := strconv.Atoi(os.Getenv(envGeneration)); err == nil && g > 1 {
		l.generation = g
	}
	if f := strings.Fields(os.Getenv(envReloads)); len(f) == 2 {
		r, err1 := strconv.Atoi(f[0])
		fr, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil && r >= 0 && fr >= 0 {
			l.reloads, l.failedReloads = r, fr
		}
	}
	return l
}

// handoverEnv is what the next generation inherits, should it take over.
func (l *lineage) handoverEnv() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return []string{
		envGeneration + "=" + strconv.Itoa(l.generation+1),
		envReloads + "=" + strconv.Itoa(l.reloads+1) + " " + strconv.Itoa(l.failedReloads),
	}
}

// watched is check, with an event when it starts failing and when it
// passes again (the watchdog's pings stop and resume then).
func (l *lineage) watched(check func(context.Context) error) func(context.Context) error {
	var failing bool // the watchdog calls check from one goroutine
	return func(ctx context.Context) error {
		err := check(ctx)
		switch {
		case err != nil && !failing:
			failing = true
			l.emit(Event{Kind: EventWatchdogFailed, Message: "watchdog: health check failed, not pinging: " + err.Error(), Err: err})
		case err == nil && failing:
			failing = false
			l.emit(Event{Kind: EventWatchdogRecovered, Message: "watchdog: health check passes again"})
		}
		return err
	}
}

// emit fills in the generation's fields and hands e to OnEvent, or its
// message to the Logger.
func (l *lineage) emit(e Event) {
	l.mu.Lock()
	switch e.Kind {
	case EventReloadCommitted:
		l.reloads++
	case EventReloadFailed:
		l.failedReloads++
	}
	e.Time, e.PID, e.Generation = time.Now(), l.pid, l.generation
	e.Reloads, e.FailedReloads = l.reloads, l.failedReloads
	if e.Kind == EventReloadCommitted || e.Kind == EventReloadFailed {
		last := e
		l.lastReload = &last
	}
	l.mu.Unlock()
	switch {
	case l.onEvent != nil:
		l.onEvent(e)
	case e.Warning():
		l.log.Warnf("%s", e.Message)
	default:
		l.log.Infof("%s", e.Message)
	}
}
