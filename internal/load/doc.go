// Package load is baton's HTTP load generator: C concurrent clients send
// GET requests to one URL for a bounded time and count, optionally while a
// schedule of disruptions (restarts, reloads) runs, and every request that
// does not end in a complete 2xx response is counted and classified.
//
// # No retries
//
// The client is a minimal HTTP/1.1 client on a raw net.Conn, not
// net/http's Transport, which silently retries idempotent requests that
// fail on a reused connection and so hides exactly the failures a zero-
// downtime reload must avoid. Here a request is written once; whatever
// happens to it is recorded. Each request writes
//
//	GET <path?query> HTTP/1.1
//	Host: <host>
//	User-Agent: baton-load
//
// (plus "Connection: close" in NewConnection mode), reads the response with
// http.ReadResponse, reads the whole body and compares its length with
// Content-Length.
//
// # Modes
//
// In KeepAlive mode each client keeps one connection and sends its requests
// on it back to back; when the server ends the connection (a response with
// "Connection: close", a body delimited by EOF, or any failure) the client
// dials a new one for its next request. A request that finds its kept
// connection already closed by the server fails (class eof or reset): it is
// not re-sent. In NewConnection mode every request dials its own connection.
//
// # Failure classes
//
//	refused    the dial failed with ECONNREFUSED
//	reset      ECONNRESET, ECONNABORTED or EPIPE while writing or reading
//	eof        the connection closed before any byte of the response
//	timeout    the per-request timeout (dial, write, read) expired
//	status     a complete response with a status outside 2xx
//	truncated  the connection closed mid-headers or before Content-Length
//	           bytes of body had arrived
//	other      anything else (a malformed response, a dial error such as
//	           EADDRNOTAVAIL)
//
// # Bounds
//
// Run always stops by itself: at Options.Duration (default 10 s), after
// Options.MaxRequests requests if set, or Options.Tail after the last
// scheduled disruption returned if set, whichever comes first. When the load
// stops no new request starts; requests in flight finish within their own
// timeout and are counted. Only cancelling the caller's context aborts
// requests in flight; those are reported as Aborted and are not failures.
//
// # Latency statistics
//
// Latencies are measured from the start of a request (including the dial
// when one is needed) to the last byte of its body, and only successful
// requests contribute to percentiles. Percentiles use the nearest-rank
// method over the kept samples (Options.MaxSamples, default 2,000,000;
// Result.SamplesDropped says how many were not kept).
//
// Each disruption event has a window: requests that started within
// [event start − Margin, event end + Margin] (Margin defaults to 1 s).
// Requests outside every window are "steady". For each event the window
// reports its request and failure counts, p99 and max latency, and the
// worst added latency: the window's max latency minus the steady p50 (the
// overall p50 when no request was steady), never below zero. It answers
// "how much longer than usual did the slowest request around this event
// wait".
//
// # Server identity
//
// Every response whose headers were read is attributed to the values of its
// X-Webapp-Pid and X-Webapp-Version headers (see PIDHeader and
// VersionHeader), so a test sees which generations answered. Servers that
// send neither are counted under no key.
package load
