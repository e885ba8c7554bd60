package drain

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// handler marks responses written while draining with Connection: close.
type handler struct {
	d *Drainer
	h http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		// An HTTP/2 connection is told to go by GOAWAY at the end of the
		// drain, not by "Connection: close" on each answer (which
		// net/http turns into a GOAWAY at once).
		if m, ok := r.Context().Value(connKey{}).(*connMark); ok {
			h.d.sawHTTP2(m)
		}
		h.h.ServeHTTP(w, r)
		return
	}
	m, _ := r.Context().Value(connKey{}).(*connMark)
	if m != nil {
		if hc, ok := m.c.(*hconn); ok {
			hc.busy.Store(true) // until net/http calls the connection idle
		}
	}
	rw := writers.Get().(*responseWriter)
	*rw = responseWriter{ResponseWriter: w, d: h.d, m: m}
	h.h.ServeHTTP(rw, r)
	if !rw.wroteHeader {
		// net/http writes the header after the handler returns.
		rw.prepare()
	}
	// A handler may not use its ResponseWriter once ServeHTTP has
	// returned (net/http's contract), so the wrapper is reused.
	*rw = responseWriter{}
	writers.Put(rw)
}

// writers holds the responseWriters of finished requests: one fewer
// allocation for each request.
var writers = sync.Pool{New: func() any { return new(responseWriter) }}

type responseWriter struct {
	http.ResponseWriter
	d           *Drainer
	m           *connMark // of the request's connection, if known
	wroteHeader bool
}

// prepare is called once, just before the header goes out.
func (w *responseWriter) prepare() {
	w.wroteHeader = true
	if w.d.Draining() {
		if w.d.closeOnDrain(w.m) {
			w.ResponseWriter.Header().Set("Connection", "close")
		}
	}
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.prepare()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.prepare()
	}
	return w.ResponseWriter.Write(b)
}

// Flush sends buffered data, and the header first if needed.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.prepare()
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack takes over the connection; the Drainer then tracks it as a raw
// connection until the caller closes it.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.wroteHeader = true
	return w.d.track(c), brw, nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
