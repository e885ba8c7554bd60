package load

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Response headers by which a server identifies itself.
const (
	PIDHeader     = "X-Webapp-Pid"
	VersionHeader = "X-Webapp-Version"
)

// Defaults used for zero Options fields.
const (
	DefaultClients           = 32
	DefaultDuration          = 10 * time.Second
	DefaultTimeout           = 5 * time.Second
	DefaultMargin            = time.Second
	DefaultMaxSamples        = 2_000_000
	DefaultMaxFailureDetails = 100
)

// Options configure Run. The zero value is usable: 32 keep-alive clients
// for 10 s with a 5 s per-request timeout. Run does not modify Options.
type Options struct {
	// Clients is the number of concurrent clients (default 32).
	Clients int
	// Mode is KeepAlive (the default) or NewConnection.
	Mode Mode
	// Duration bounds the load in time (default 10 s).
	Duration time.Duration
	// MaxRequests bounds the load in requests started; 0 means no bound
	// other than Duration.
	MaxRequests int64
	// Timeout bounds each request from dial to the last body byte
	// (default 5 s).
	Timeout time.Duration

	// Dial, if set, opens connections instead of a net.Dialer; network is
	// "tcp" and addr is the URL's host:port. The context carries the
	// request's deadline.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Schedule, if its Run is set, runs disruptions while the load runs.
	Schedule Schedule
	// Tail, if positive and Schedule.Count is positive, stops the load
	// Tail after the last disruption returned (never later than Duration).
	Tail time.Duration
	// Margin widens each disruption's window on both sides (default 1 s).
	Margin time.Duration

	// MaxSamples caps the per-request samples kept in memory (default
	// 2,000,000; negative keeps none, which leaves latency statistics
	// empty).
	MaxSamples int
	// MaxFailureDetails caps the failures recorded in detail (default 100;
	// negative keeps none).
	MaxFailureDetails int
}

// Schedule runs disruptions one after another while the load runs.
//
// Event i starts at Start for i = 0, then at the later of (start of event
// i−1) + Every and the moment event i−1 returned: events never overlap, and
// they are at least Every apart when they are quicker than Every.
type Schedule struct {
	// Start is the offset of the first event from the start of the load.
	Start time.Duration
	// Every is the period between event starts.
	Every time.Duration
	// Count is the number of events; zero or negative means keep going
	// until the load stops.
	Count int
	// Run performs event i (0-based). Its context is cancelled when the
	// load stops or the caller's context is cancelled; Run should then
	// return promptly, since Run (the function) waits for it. An error is
	// recorded in the event and does not stop the schedule.
	Run func(ctx context.Context, i int) error
}

// Run sends load to target, an http:// URL, as opts says, and returns what
// happened. It returns an error without a Result only for invalid options.
// If ctx is cancelled, Run aborts requests in flight, waits for the
// disruption in progress and returns the partial Result with an error
// wrapping ctx.Err().
func Run(ctx context.Context, target string, opts Options) (*Result, error) {
	r, err := newRunner(target, opts)
	if err != nil {
		return nil, err
	}
	res := r.run(ctx)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("load: stopped early: %w", err)
	}
	return res, nil
}

// runner is the state of one Run.
type runner struct {
	opts    Options // with defaults applied
	target  string
	addr    string
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	request []byte

	t0       time.Time
	stopped  atomic.Bool
	aborting atomic.Bool
	issued   atomic.Int64 // requests started, for MaxRequests
	kept     atomic.Int64 // samples reserved, for MaxSamples

	abortCtx context.Context // cancelled when the caller's ctx is
	stopCtx  context.Context // cancelled when the load stops
	stopFn   context.CancelFunc

	workers []*worker

	failMu   sync.Mutex
	failures []Failure

	events []Event // written by the scheduler goroutine only
}

func newRunner(target string, opts Options) (*runner, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("load: target: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("load: target %q: scheme must be http", target)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("load: target %q: no host", target)
	}
	switch {
	case opts.Clients < 0:
		return nil, fmt.Errorf("load: negative Clients %d", opts.Clients)
	case opts.Duration < 0:
		return nil, fmt.Errorf("load: negative Duration %v", opts.Duration)
	case opts.MaxRequests < 0:
		return nil, fmt.Errorf("load: negative MaxRequests %d", opts.MaxRequests)
	case opts.Timeout < 0:
		return nil, fmt.Errorf("load: negative Timeout %v", opts.Timeout)
	case opts.Margin < 0:
		return nil, fmt.Errorf("load: negative Margin %v", opts.Margin)
	case opts.Mode > NewConnection:
		return nil, fmt.Errorf("load: unknown mode %d", opts.Mode)
	case opts.Schedule.Every < 0 || opts.Schedule.Start < 0:
		return nil, fmt.Errorf("load: negative Schedule.Start or Schedule.Every")
	}
	if opts.Clients == 0 {
		opts.Clients = DefaultClients
	}
	if opts.Duration == 0 {
		opts.Duration = DefaultDuration
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Margin == 0 {
		opts.Margin = DefaultMargin
	}
	if opts.MaxSamples == 0 {
		opts.MaxSamples = DefaultMaxSamples
	}
	if opts.MaxFailureDetails == 0 {
		opts.MaxFailureDetails = DefaultMaxFailureDetails
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	r := &runner{opts: opts, target: target, addr: addr, dial: opts.Dial}
	if r.dial == nil {
		var d net.Dialer
		r.dial = d.DialContext
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: baton-load\r\n"
	if opts.Mode == NewConnection {
		req += "Connection: close\r\n"
	}
	r.request = []byte(req + "\r\n")
	return r, nil
}

func (r *runner) run(ctx context.Context) *Result {
	var abortCancel context.CancelFunc
	r.abortCtx, abortCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer abortCancel()
	r.stopCtx, r.stopFn = context.WithCancel(context.WithoutCancel(ctx))
	defer r.stopFn()

	r.workers = make([]*worker, r.opts.Clients)
	for i := range r.workers {
		r.workers[i] = newWorker(r, i)
	}

	r.t0 = time.Now()
	durTimer := time.AfterFunc(r.opts.Duration, r.stop)
	defer durTimer.Stop()
	stopAbort := context.AfterFunc(ctx, func() {
		r.aborting.Store(true)
		r.stop()
		abortCancel()
		for _, w := range r.workers {
			w.abort()
		}
	})
	defer stopAbort()

	var sched sync.WaitGroup
	if r.opts.Schedule.Run != nil {
		sched.Go(r.schedule)
	}
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(w.loop)
	}
	wg.Wait()
	elapsed := time.Since(r.t0)
	r.stop()
	sched.Wait()
	return r.result(elapsed)
}

// stop ends the load: no request starts after it.
func (r *runner) stop() {
	r.stopped.Store(true)
	r.stopFn()
}

// schedule runs the disruptions; it runs in its own goroutine.
func (r *runner) schedule() {
	s := r.opts.Schedule
	ctx := r.stopCtx
	next := s.Start
	for i := 0; s.Count <= 0 || i < s.Count; i++ {
		if !sleepUntil(ctx, r.t0.Add(next)) {
			return
		}
		start := time.Since(r.t0)
		err := s.Run(ctx, i)
		end := time.Since(r.t0)
		ev := Event{Index: i, Start: start, Duration: end - start, Err: err}
		if err != nil {
			ev.Error = err.Error()
		}
		r.events = append(r.events, ev)
		if ctx.Err() != nil {
			return
		}
		next = max(start+s.Every, end)
	}
	if r.opts.Tail > 0 && s.Count > 0 && sleepUntil(ctx, time.Now().Add(r.opts.Tail)) {
		r.stop()
	}
}

// sleepUntil waits until t or until ctx is done; it reports whether t came.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// recordFailure keeps the first MaxFailureDetails failures.
func (r *runner) recordFailure(f Failure) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if len(r.failures) < r.opts.MaxFailureDetails {
		r.failures = append(r.failures, f)
	}
}
