package upgrade

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/baton-dev/baton/systemd"
)

// DefaultTimeout is how long a new generation has to become ready when
// Options.Timeout is zero. It is well under the TimeoutStartSec= that
// bounds `systemctl reload`.
const DefaultTimeout = 20 * time.Second

// Environment entries that a new generation receives.
const (
	envUpgradeFD = "BATON_UPGRADE_FD"
	envControlFD = "BATON_CONTROL_FD"
	envParent    = "BATON_UPGRADE_PARENT"
	envPID       = "BATON_UPGRADE_PID"
	// envConnsFD names the new generation's end of the conns channel.
	envConnsFD = "BATON_CONNS_FD"
)

// trampoline is the intermediate shell: it starts the new generation in
// the background and exits. The inner shell exports its own pid, which the
// program keeps across exec, in BATON_UPGRADE_PID and BATON_LISTEN_PID (the
// same check for package activation), so that only that process takes the
// descriptors; the pid goes back to the old generation on fd 3.
const trampoline = `/bin/sh -c 'export BATON_UPGRADE_PID=$$ BATON_LISTEN_PID=$$; exec "$@"' baton-generation "$@" 3>&- & echo $! >&3`

var (
	// ErrHandedOver is returned for an upgrade requested after this
	// generation has handed over to a new one.
	ErrHandedOver = errors.New("upgrade: this generation has handed over")
	// ErrNotInherited is returned by Inherited in a process that was not
	// started by a previous generation.
	ErrNotInherited = errors.New("upgrade: not started by a previous generation")
	// ErrAborted is returned by Handoff.Ready when the old generation
	// gives up on this one.
	ErrAborted = errors.New("upgrade: the old generation aborted the upgrade")
	// ErrOrphaned is returned by Handoff.Accepting when the old
	// generation went away after this one began to accept, before it made
	// this one the main process.
	ErrOrphaned = errors.New("upgrade: the old generation went away during the hand-over")
)

// Logger receives progress messages. *logrus.Logger and *logrus.Entry
// satisfy it.
type Logger interface {
	Infof(format string, args ...any)
	Warnf(format string, args ...any)
}

// Options configures an Upgrader.
type Options struct {
	// Path is the binary to start: the install path of the program, such
	// as /usr/bin/webapp. Required; it must be absolute.
	Path string
	// Args are its arguments, without the program name (typically
	// os.Args[1:]).
	Args []string
	// Timeout bounds the time from start to ready. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Notifier is told about the reload (RELOADING=1, MAINPID=, READY=1,
	// STATUS=). Nil outside systemd.
	Notifier *systemd.Notifier
	// Logger receives progress messages. Nil discards them.
	Logger Logger
	// OnCommit, if set, is called once the new generation accepts and
	// systemd knows it as the main process, just before Upgrade returns:
	// stop accepting there (drain.Drainer.StopAccepting), so that a client
	// that connects after Upgrade returns is answered by the new one.
	OnCommit func()
	// OnConns, if set, is called with a ConnSender when the new
	// generation takes connections (Handoff.TakeConns): once it is the
	// main process, just before OnCommit. Arm the drain there, so that it
	// passes the connections it would close (idle keep-alive ones) with
	// ConnSender.Send, and Close the sender when it is done: the new
	// generation then stops waiting for more. It is not called when the
	// upgrade fails or the new generation takes none (an older version,
	// or one that did not call TakeConns); the conns channel is closed
	// then.
	OnConns func(*ConnSender)
	// Pause, if set, is called just before the old generation writes
	// "commit": stop there what only one generation may do at a time
	// (reading a datagram socket). If the hand-over fails after that and
	// this generation stays the service, Resume is called (if set) before
	// Upgrade returns the error. After a successful hand-over only OnCommit
	// is called.
	Pause, Resume func()
	// OnStep, if set, is called synchronously as the old generation
	// passes each step of the hand-over (a place to log or trace it).
	OnStep func(Step)
	// OnStart and OnOutcome, if set, are called synchronously when an
	// upgrade starts a new generation and when it has succeeded (err nil)
	// or failed; the Result's Duration is set either way. An upgrade that
	// joins one under way calls neither. With them set, the start and the
	// outcome are not logged: the caller reports them.
	OnStart   func()
	OnOutcome func(Result, error)
	// Status, if set, answers a status request on the control socket
	// (see RequestStatus): one line of text (JSON, say), at most a few
	// kilobytes. Without it a status request gets an error.
	Status func() string
	// Stopping, if set, is closed when the service begins to stop: from
	// then on a reload request is refused (ErrStopping) and one under way
	// is abandoned, while status requests are still answered as long as
	// ServeControl's context lasts.
	Stopping <-chan struct{}
	// NotifyReload is for a unit with Type=notify-reload (systemd 253 and
	// later): `systemctl reload` sends the reload signal and waits for
	// RELOADING=1 and READY=1. RELOADING=1 (with MONOTONIC_USEC=) then goes
	// out only in the datagram that announces the new generation
	// (MAINPID=, READY=1), which ends the reload; a failed swap sends its
	// STATUS= without READY=1, and systemd fails the reload when
	// TimeoutStartSec= runs out. Measured on systemd 257: READY=1 always
	// ends a reload as a success (ERRNO= is ignored), and once RELOADING=1
	// has arrived without READY=1 the timeout no longer ends the reload
	// (the unit stays "reloading"); before RELOADING=1 it does.
	NotifyReload bool
}

// Step names a point of the hand-over, as the old generation passes it
// (Options.OnStep) or the new one does (see Handoff).
type Step string

// The steps of the hand-over, in order.
const (
	// StepStarted: the new generation's process exists (old side).
	StepStarted Step = "started"
	// StepNewReady: the new generation is healthy and about to say so
	// (new side, before Handoff.Ready).
	StepNewReady Step = "new-ready"
	// StepReady: the new generation said it is ready (old side).
	StepReady Step = "ready"
	// StepCommitted: the new generation was told to accept (old side).
	StepCommitted Step = "committed"
	// StepNewAccepting: the new generation accepts and is about to say
	// so (new side, before Handoff.Accepting).
	StepNewAccepting Step = "new-accepting"
	// StepAnnounced: systemd has taken MAINPID=<new> in (old side).
	StepAnnounced Step = "announced"
)

// Handover is what a new generation inherits besides the handshake: files
// that land at consecutive descriptors from the firstFD given to the
// handover function, in order, and the environment entries that describe
// them (see activation.Set.Export).
type Handover struct {
	Files []*os.File
	Env   []string
}

// Result describes a successful upgrade.
type Result struct {
	// PID is the new generation's process id, now the main process.
	PID int
	// Duration is the time from start to commit.
	Duration time.Duration
}

// Upgrader performs upgrades for the running generation. Use New.
type Upgrader struct {
	opts     Options
	handover func(firstFD int) (Handover, error)

	mu         sync.Mutex
	cur        *attempt
	handedOver chan struct{}
	done       bool
	control    *os.File // a duplicate of the control socket, handed on
	controlLn  net.Listener
}

type attempt struct {
	done chan struct{}
	res  Result
	err  error
}

// New returns an Upgrader. handover is called at each upgrade for the
// files and environment the new generation inherits, with the descriptor
// the first file lands at (typically a closure over
// activation.Set.Export(firstFD)).
func New(opts Options, handover func(firstFD int) (Handover, error)) (*Upgrader, error) {
	if !filepath.IsAbs(opts.Path) {
		return nil, fmt.Errorf("upgrade: binary path %q: must be absolute", opts.Path)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("upgrade: timeout %v: must be positive", opts.Timeout)
	}
	if handover == nil {
		return nil, errors.New("upgrade: no handover function")
	}
	return &Upgrader{opts: opts, handover: handover, handedOver: make(chan struct{})}, nil
}

// HandedOver is closed once a new generation has taken over. The caller
// then stops accepting and drains this generation.
func (u *Upgrader) HandedOver() <-chan struct{} { return u.handedOver }

// Upgrade starts a new generation and hands over to it, as described in
// the package documentation. It returns once the new generation is the
// main process and ready, or with the reason it is not; the old
// generation then keeps serving. ctx aborts the attempt (for example when
// the service is told to stop). Concurrent calls share one attempt.
func (u *Upgrader) Upgrade(ctx context.Context) (Result, error) { return u.upgrade(ctx, nil) }

// upgrade is Upgrade for a new generation that gets files (Handoff.Files).
// Files cannot join an attempt under way: the request is refused with
// ErrBusy instead.
func (u *Upgrader) upgrade(ctx context.Context, files []File) (Result, error) {
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return Result{}, ErrHandedOver
	}
	if a := u.cur; a != nil {
		u.mu.Unlock()
		if len(files) > 0 {
			err := fmt.Errorf("%w: the new generation it starts would not get this request's files (%s); reload again once it is done", ErrBusy, strings.Join(fileNames(files), ", "))
			if u.opts.Logger != nil {
				u.opts.Logger.Warnf("%v", err)
			}
			return Result{}, err
		}
		u.logf("upgrade: already under way, waiting for its outcome")
		<-a.done
		return a.res, a.err
	}
	a := &attempt{done: make(chan struct{})}
	u.cur = a
	u.mu.Unlock()

	a.res, a.err = u.attempt(ctx, files)

	u.mu.Lock()
	u.cur = nil
	if a.err == nil {
		u.done = true
		close(u.handedOver)
	}
	u.mu.Unlock()
	close(a.done)
	return a.res, a.err
}

func (u *Upgrader) attempt(ctx context.Context, files []File) (Result, error) {
	start := time.Now()
	n := u.opts.Notifier
	if u.opts.NotifyReload {
		n.Notify(systemd.Status("reloading: starting " + u.opts.Path))
	} else {
		n.Notify(systemd.Reloading(), systemd.Status("reloading: starting "+u.opts.Path))
	}
	if u.opts.OnStart != nil {
		u.opts.OnStart()
	} else {
		u.logf("upgrade: starting %s", u.opts.Path)
	}
	pid, err := u.run(ctx, start, files)
	if err != nil {
		err = fmt.Errorf("upgrade: %w", err)
		failed := systemd.Status("reload failed: " + strings.TrimPrefix(err.Error(), "upgrade: "))
		if u.opts.NotifyReload {
			n.Notify(failed) // systemd's reload timeout fails the reload
		} else {
			n.Notify(systemd.Ready, failed)
		}
		if u.opts.OnOutcome != nil {
			u.opts.OnOutcome(Result{Duration: time.Since(start)}, err)
		} else if u.opts.Logger != nil {
			u.opts.Logger.Warnf("%v; still serving as pid %d", err, os.Getpid())
		}
		return Result{}, err
	}
	res := Result{PID: pid, Duration: time.Since(start)}
	if u.opts.OnOutcome != nil {
		u.opts.OnOutcome(res, nil)
	} else {
		u.logf("upgrade: pid %d took over in %v", pid, res.Duration.Round(time.Millisecond))
	}
	return res, nil
}

// run starts the new generation, with passed as its files, and commits to
// it; it returns the new pid. Once it has called Options.Pause, every
// error return calls Options.Resume.
func (u *Upgrader) run(ctx context.Context, start time.Time, passed []File) (pid int, err error) {
	paused := false
	defer func() {
		if paused && err != nil && u.opts.Resume != nil {
			u.opts.Resume()
		}
	}()
	if err := checkExecutable(u.opts.Path); err != nil {
		return 0, fmt.Errorf("cannot start the new binary: %w", err)
	}
	// fd 3 of the intermediate shell reports the new pid; the handover
	// files follow from fd 4, then the passed files, the handshake, the
	// control socket and the conns channel.
	h, err := u.handover(4)
	if err != nil {
		return 0, fmt.Errorf("preparing the handover: %w", err)
	}
	ours, theirs, err := socketpair("upgrade-handshake")
	if err != nil {
		return 0, fmt.Errorf("socketpair: %w", err)
	}
	defer ours.Close()
	// The conns channel: once the new generation is the service, this one
	// may pass it connections (OnConns). Closed here unless a ConnSender
	// takes it.
	connsOurs, connsTheirs, err := socketpair("upgrade-conns")
	if err != nil {
		theirs.Close()
		return 0, fmt.Errorf("socketpair: %w", err)
	}
	conns, err := unixConn(connsOurs)
	if err != nil {
		theirs.Close()
		connsTheirs.Close()
		return 0, fmt.Errorf("conns channel: %w", err)
	}
	defer func() {
		if conns != nil {
			conns.Close()
		}
	}()
	pidR, pidW, err := os.Pipe()
	if err != nil {
		theirs.Close()
		connsTheirs.Close()
		return 0, err
	}
	defer pidR.Close()

	files := append([]*os.File{pidW}, h.Files...)
	env := append(childEnv(os.Environ()), h.Env...)
	if len(passed) > 0 {
		env = append(env,
			envFiles+"="+strings.Join(fileNames(passed), ":"),
			envFilesFD+"="+strconv.Itoa(3+len(files)))
		for _, f := range passed {
			files = append(files, f.File)
		}
	}
	files = append(files, theirs)
	env = append(env,
		envUpgradeFD+"="+strconv.Itoa(3+len(files)-1),
		envParent+"="+strconv.Itoa(os.Getpid()))
	u.mu.Lock()
	if u.control != nil {
		files = append(files, u.control)
		env = append(env, envControlFD+"="+strconv.Itoa(3+len(files)-1))
	}
	u.mu.Unlock()
	files = append(files, connsTheirs)
	env = append(env, envConnsFD+"="+strconv.Itoa(3+len(files)-1))

	// The new generation is started by a shell that exits at once, so that
	// it is reparented to the service manager before it is announced as
	// MAINPID=: systemd only watches a main process that is its own child
	// ("Supervising process ... which is not our child" otherwise, and a
	// later stop would not wait for it to drain).
	argv := append([]string{"baton-upgrade", "-c", trampoline, "baton-upgrade", u.opts.Path}, u.opts.Args...)
	shPID, err := spawn("/bin/sh", argv, env, files)
	theirs.Close()
	connsTheirs.Close()
	pidW.Close()
	if err != nil {
		return 0, fmt.Errorf("cannot start the new binary: %w", err)
	}
	pidR.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, rerr := bufio.NewReader(pidR).ReadString('\n')
	werr := reap(shPID)
	var perr error
	pid, perr = strconv.Atoi(strings.TrimSpace(line))
	if rerr != nil || perr != nil || pid <= 0 {
		return 0, fmt.Errorf("cannot start the new binary: no process id from the shell (%v, %v)", rerr, werr)
	}
	proc, err := openProcess(pid)
	if errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("new generation (pid %d) exited before it was ready (its log says why)", pid)
	}
	if err != nil {
		return 0, fmt.Errorf("new generation (pid %d): %w", pid, err)
	}
	defer proc.Close()
	nw := newPeer(proc, ours)
	defer nw.close()
	u.step(StepStarted)

	deadline := start.Add(u.opts.Timeout)
	canceled := func() error { return fmt.Errorf("canceled, the service is stopping: %w", context.Cause(ctx)) }
	// stopping reports whether the service is stopping: a stop sends
	// SIGTERM to every process of the service at once, and the new
	// generation may be seen to exit a moment before ctx ends.
	stopping := func() bool {
		t := time.NewTimer(250 * time.Millisecond)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return true
		case <-t.C:
			return false
		}
	}
	gone := func() (int, error) {
		if stopping() {
			return nw.abort(canceled())
		}
		return nw.abort(fmt.Errorf("new generation (pid %d) exited before it was ready (its log says why)", pid))
	}
	// 1. "ready": it is healthy and accepts nothing yet.
	switch line, err := nw.next(ctx, deadline); {
	case errors.Is(err, errExited):
		return gone()
	case errors.Is(err, errTimeout):
		return nw.abort(fmt.Errorf("new generation (pid %d) not ready within %v", pid, u.opts.Timeout))
	case ctx.Err() != nil:
		return nw.abort(canceled())
	case err != nil:
		if nw.exitedWithin(time.Second) {
			return gone()
		}
		return nw.abort(fmt.Errorf("new generation (pid %d): handshake: %w", pid, err))
	case line != lineReady:
		return nw.abort(fmt.Errorf("new generation (pid %d): unexpected handshake %q", pid, line))
	}
	u.step(StepReady)

	// 2. "commit": it starts accepting beside us. We go on accepting
	// until systemd knows it as the main process, so that whatever happens
	// to it before that, this generation still serves.
	if nw.exited() {
		return gone()
	}
	if u.opts.Pause != nil {
		u.opts.Pause()
	}
	paused = true
	if err := nw.send(lineCommit); err != nil {
		if nw.exitedWithin(time.Second) {
			return gone()
		}
		return nw.abort(fmt.Errorf("new generation (pid %d): handshake: %w", pid, err))
	}
	u.step(StepCommitted)

	// 3. "accepting": it serves. From here on it may hold connections:
	// a stop asks it to drain (SIGTERM) instead of killing it.
	lost := func(why string) (int, error) {
		if stopping() {
			// Under systemd it was told to drain along with us; without,
			// tell it here.
			proc.Terminate()
			return 0, canceled()
		}
		return nw.abort(fmt.Errorf("new generation (pid %d) %s after the commit; its connections, if any, are lost", pid, why))
	}
	ackBy := deadline
	if min := time.Now().Add(time.Second); ackBy.Before(min) {
		ackBy = min
	}
	switch line, err := nw.next(ctx, ackBy); {
	case errors.Is(err, errExited):
		return lost("exited")
	case errors.Is(err, errTimeout):
		return lost(fmt.Sprintf("did not start accepting within %v", u.opts.Timeout))
	case ctx.Err() != nil:
		proc.Terminate()
		return 0, canceled()
	case err != nil:
		if nw.exitedWithin(time.Second) {
			return lost("exited")
		}
		return lost(fmt.Sprintf("broke the handshake (%v)", err))
	case line != lineAccepting:
		return lost(fmt.Sprintf("answered %q", line))
	}
	// It wrote its acknowledgement on the conns channel, if it takes
	// connections, before "accepting": it is queued by now.
	takesConns, aerr := connsAcked(conns)
	if aerr != nil && u.opts.Logger != nil {
		u.opts.Logger.Warnf("upgrade: new generation (pid %d): conns channel: %v (passing it no connections)", pid, aerr)
	}

	// 4. MAINPID=: systemd learns the new main process, and BARRIER=1
	// makes sure it has taken that in before we look again.
	if nw.exited() {
		return lost("exited")
	}
	n := u.opts.Notifier
	announce := []systemd.State{systemd.MainPID(pid), systemd.Ready,
		systemd.Status(fmt.Sprintf("reloaded: pid %d took over from pid %d", pid, os.Getpid()))}
	if u.opts.NotifyReload {
		// RELOADING=1 with READY=1 in one datagram ends the reload.
		announce = append([]systemd.State{systemd.Reloading()}, announce...)
	}
	if err := n.Notify(announce...); err != nil {
		proc.Terminate()
		return 0, fmt.Errorf("announcing pid %d: %w (asked it to drain and exit)", pid, err)
	}
	bctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = n.Barrier(bctx)
	cancel()
	if err != nil && u.opts.Logger != nil {
		u.opts.Logger.Warnf("upgrade: %v (going on)", err)
	}
	u.step(StepAnnounced)
	if nw.exited() {
		// It died around its announcement. If systemd refused it (a dead
		// process cannot be the main process), this one still is; if
		// systemd took it, the main process has died and systemd restarts
		// the service. Either way nothing has stopped accepting here.
		n.Notify(systemd.MainPID(os.Getpid()), systemd.Ready)
		return 0, fmt.Errorf("new generation (pid %d) exited as it took over (its log says why)", pid)
	}
	if err := nw.send(lineMain); err != nil {
		return 0, fmt.Errorf("new generation (pid %d) went away as it took over: %w", pid, err)
	}
	if takesConns && u.opts.OnConns != nil {
		s := newConnSender(conns)
		conns = nil
		u.opts.OnConns(s)
	}

	// Hand over: stop accepting, so that a client that connects after
	// Upgrade returns is answered by the new generation.
	u.mu.Lock()
	if u.controlLn != nil {
		u.controlLn.Close()
	}
	u.mu.Unlock()
	if u.opts.OnCommit != nil {
		u.opts.OnCommit()
	}
	return pid, nil
}

// childEnv is env without what must not reach a new generation.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "WATCHDOG_PID", k == "LISTEN_PID", k == "LISTEN_FDS", k == "LISTEN_FDNAMES",
			strings.HasPrefix(k, "BATON_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (u *Upgrader) step(s Step) {
	if u.opts.OnStep != nil {
		u.opts.OnStep(s)
	}
}

func (u *Upgrader) logf(format string, args ...any) {
	if u.opts.Logger != nil {
		u.opts.Logger.Infof(format, args...)
	}
}
