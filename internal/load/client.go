package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// worker is one client: it sends requests one after another, on one kept
// connection or on a new connection each, and keeps its own counters so
// that clients share nothing on the hot path but two atomic counters.
type worker struct {
	r  *runner
	id int

	mu   sync.Mutex // guards conn against abort
	conn net.Conn

	cr       countingReader
	br       *bufio.Reader
	body     []byte
	connReqs int // requests sent on conn
	curReq   int // connReqs of the request in progress; 0 if not sent on a connection

	counts   [numClasses]int64
	aborted  int64
	dials    int64
	samples  []Sample
	dropped  int64
	pids     map[string]int64
	versions map[string]int64
}

// countingReader counts the bytes read from a connection for the current
// request and remembers whether it saw the end of the stream, so that a
// response cut anywhere can be told from one that never started.
type countingReader struct {
	conn net.Conn
	n    int64
	eof  bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.conn.Read(p)
	c.n += int64(n)
	if err == io.EOF {
		c.eof = true
	}
	return n, err
}

func newWorker(r *runner, id int) *worker {
	w := &worker{
		r:        r,
		id:       id,
		body:     make([]byte, 16<<10),
		pids:     make(map[string]int64),
		versions: make(map[string]int64),
	}
	w.br = bufio.NewReaderSize(&w.cr, 4<<10)
	return w
}

// outcome is what one request came to.
type outcome struct {
	class   Class
	err     error
	written bool
	status  int
	pid     int32
	aborted bool
}

func (w *worker) loop() {
	r := w.r
	defer w.closeConn()
	for !r.stopped.Load() {
		if r.opts.MaxRequests > 0 && r.issued.Add(1) > r.opts.MaxRequests {
			r.stop()
			return
		}
		start := time.Now()
		o := w.do(start)
		end := time.Now()
		if o.aborted {
			w.aborted++
			continue
		}
		w.counts[o.class]++
		if r.opts.MaxSamples > 0 {
			if r.kept.Add(1) <= int64(r.opts.MaxSamples) {
				w.samples = append(w.samples, Sample{
					Start:   start.Sub(r.t0),
					Latency: end.Sub(start),
					PID:     o.pid,
					Class:   o.class,
				})
			} else {
				w.dropped++
			}
		}
		if o.class != ClassOK && r.opts.MaxFailureDetails > 0 {
			f := Failure{
				Offset:      start.Sub(r.t0),
				Latency:     end.Sub(start),
				Class:       o.class,
				Written:     o.written,
				ConnRequest: w.curReq,
				Client:      w.id,
				Status:      o.status,
			}
			if o.err != nil {
				f.Error = o.err.Error()
			}
			r.recordFailure(f)
		}
		if o.class != ClassOK || r.opts.Mode == NewConnection {
			// After a failure the connection's state is unknown; never
			// reuse it.
			w.closeConn()
		}
	}
}

// do performs one request. The connection is closed by the caller on
// failure; do closes it itself when the server ends it.
func (w *worker) do(start time.Time) outcome {
	r := w.r
	deadline := start.Add(r.opts.Timeout)
	w.curReq = 0
	w.cr.n, w.cr.eof = 0, false
	if w.conn == nil {
		if err := w.dialConn(deadline); err != nil {
			return w.fail(err)
		}
	}
	w.connReqs++
	w.curReq = w.connReqs
	if err := w.conn.SetDeadline(deadline); err != nil {
		return w.fail(err)
	}
	// An abort that came before SetDeadline was overridden by it.
	if r.aborting.Load() {
		return outcome{aborted: true}
	}
	if _, err := w.conn.Write(r.request); err != nil {
		return w.fail(err)
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		o := w.fail(err)
		o.written = true
		return o
	}
	o := outcome{written: true, status: resp.StatusCode}
	if v := resp.Header[PIDHeader]; len(v) > 0 {
		w.pids[v[0]]++
		if pid, err := strconv.ParseInt(v[0], 10, 32); err == nil {
			o.pid = int32(pid)
		}
	}
	if v := resp.Header[VersionHeader]; len(v) > 0 {
		w.versions[v[0]]++
	}
	n, err := w.readBody(resp.Body)
	if err != nil {
		o2 := w.fail(err)
		o2.written, o2.status, o2.pid = true, o.status, o.pid
		return o2
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		o.class = ClassTruncated
		o.err = fmt.Errorf("body of %d bytes, Content-Length %d", n, resp.ContentLength)
		return o
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		o.class = ClassStatus
		o.err = fmt.Errorf("status %s", resp.Status)
	}
	if resp.Close {
		w.closeConn()
	}
	return o
}

// readBody reads body to its end into a reused buffer and returns its
// length.
func (w *worker) readBody(body io.ReadCloser) (int64, error) {
	var n int64
	for {
		m, err := body.Read(w.body)
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// fail classifies err; a timeout caused by the caller's cancellation is an
// abort, not a failure.
func (w *worker) fail(err error) outcome {
	if w.r.aborting.Load() {
		return outcome{aborted: true}
	}
	return outcome{class: classify(err, w.cr.n, w.cr.eof), err: err}
}

func (w *worker) dialConn(deadline time.Time) error {
	ctx, cancel := context.WithDeadline(w.r.abortCtx, deadline)
	defer cancel()
	w.dials++
	c, err := w.r.dial(ctx, "tcp", w.r.addr)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.conn = c
	w.mu.Unlock()
	if w.r.aborting.Load() {
		w.abort()
	}
	w.cr.conn = c
	w.br.Reset(&w.cr)
	w.connReqs = 0
	return nil
}

func (w *worker) closeConn() {
	w.mu.Lock()
	c := w.conn
	w.conn = nil
	w.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// abort makes the request in flight, if any, fail at once.
func (w *worker) abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		w.conn.SetDeadline(time.Unix(1, 0))
	}
}
