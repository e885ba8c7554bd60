// Package drain shuts down http.Servers and raw connections without failing
// a request a client has already sent.
//
// Shutdown runs in this order:
//
//  1. Stop accepting: every listener handed to Serve or Listen is closed.
//     Under socket activation only this process's copy of the socket
//     closes; systemd (or the next generation of the binary) still holds
//     it, so new connections wait in the kernel's queue instead of being
//     refused.
//  2. Every HTTP/1 response written from now on, including those of
//     requests already in flight, carries "Connection: close", so each
//     kept-alive client learns after its next answer that it must
//     reconnect. HTTP/2 answers do not (net/http would turn it into an
//     immediate GOAWAY): see step 4.
//  3. For a grace the servers keep serving kept-alive connections, so
//     that a client which sent its next request just as the drain began
//     is still answered. net/http's own Shutdown, and
//     SetKeepAlivesEnabled(false), close idle connections at once and
//     lose exactly those requests. The grace adapts to each connection: a
//     connection waiting for its next request is closed once it has been
//     idle for twice its own recent gap between requests, never before
//     Options.IdleGrace (one second by default) and never later than ten
//     times that (or half the time left to the deadline). At thousands of
//     connections a client's requests on one connection come seconds
//     apart; a fixed second would close connections under requests on
//     their way.
//  4. HTTP/2 connections that are busy go on being served until each has
//     had no open stream for the idle grace, or until half the time left
//     to the deadline has passed: a client that keeps its connection busy
//     loses nothing, even one that does not reconnect after GOAWAY (h2load
//     gives up a connection's remaining requests then).
//  5. The servers' Shutdown sends GOAWAY on every HTTP/2 connection (whose
//     open streams finish), closes the connections that are still idle
//     and waits for requests in flight; raw and hijacked connections are
//     waited for until their owners close them.
//  6. When the context ends first, whatever is left is closed by force
//     and counted: Shutdown returns an error wrapping ErrCut and the
//     context's error, and a Report saying how many connections were cut.
//
// # Handing connections over
//
// At a reload the connections need not be closed at all. HandOver, called
// before the drain, passes each plaintext HTTP/1.1 connection to a
// function that gives its descriptor to the next generation (over
// SCM_RIGHTS, see package upgrade), which serves it with Adopt as if it
// had accepted it: the kernel's TCP connection, with whatever the client
// has sent since, moves, and the client never notices. A connection goes
// only at a moment when this process holds no byte of the client's next
// request: a server connection is wrapped, and net/http reads it through
// a 4 KiB buffer, so a Read into the whole of that buffer (the length of
// the connection's first Read) means the buffer is empty. A connection
// waiting for its next request, or for its first, is interrupted in that
// Read (a read deadline in the past, which net/http never sees: the Read
// resumes with net/http's own deadline) and goes at once; one with a
// request under way goes once it is answered; one holding part of a
// pipelined request in the buffer goes after that request too. The
// answers carry no "Connection: close". The old process then closes its
// descriptor without shutting the connection down (net/http's
// CloseWrite, a TCP FIN on the shared connection, is not passed on), and
// writes nothing more to it. TLS connections (their state lives in the
// process), HTTP/2 and hijacked connections stay and drain as described
// here; so does every connection once a hand-over failed. Shutdown waits,
// up to its deadline, until every connection that can go has gone.
//
// The wrapper also holds each connection's state, so that a request on
// a kept-alive connection changes it with atomic stores instead of a
// locked map lookup.
//
// # Long-lived connections
//
// A WebSocket, a server-sent event stream or a raw connection has no
// "Connection: close" to hear: it would hold the drain until the
// deadline and then be cut. Begun returns a channel that is closed when
// the drain begins (StopAccepting, or Shutdown); a handler reaches it
// through Begun(r.Context()), as every request of a server given to Serve
// carries it, and a raw connection's handler through a context made by
// NewContext, which ends then too. On that signal the handler finishes
// what it has under way and ends in a way its client resumes from (close
// 1001 "going away" after the last echo; the end of the event stream,
// which the client resumes with Last-Event-ID). OnDrain is the same
// signal as a callback. A hijacked connection (http.Hijacker, or
// http.ResponseController's Hijack, which WebSocket libraries use) stays
// tracked until it is closed: Raw counts such connections, Shutdown
// waits for them, and those still open at the deadline are cut and
// counted.
//
// # What counts as cut
//
// At the deadline every connection left is closed, but only those with
// work under way count in Report.Cut and make Shutdown return ErrCut; the
// others count in Report.Idle. net/http's connection states alone cannot
// tell them apart: a connection stays "new" until its first request
// header is complete (a client sending its header one byte a second is
// "new" for as long as it likes, and so is one that never sends a byte),
// and a pipelined request read from net/http's buffer runs with its
// connection still "idle". So the Drainer asks the kernel (on Linux) about
// the connections net/http calls new or idle:
//
//   - cut: a request being answered ("active"); answers the kernel
//     cannot send because the client does not read them, in any state; a
//     new connection on which the client has sent at least one byte (a
//     request header begun); raw and hijacked connections. net/http's
//     Shutdown closes some of these itself, as if idle, at the end of the
//     grace: a connection still in its first header after 5 seconds (a
//     slowloris), and a pipelining client's that never reads its answers
//     (net/http calls it "idle"); and it drops any request it reads after
//     it began. So the Drainer notes the new and idle connections with
//     work under way when the grace ends, counts each that goes before
//     the deadline as cut, and Shutdown returns ErrCut even if it ends
//     before the deadline.
//   - idle: a new connection on which the client has sent nothing, and a
//     kept-alive connection waiting for its next request with nothing
//     left to send. A client part-way through the header of a later
//     request on a kept-alive connection cannot be told from an idle one
//     and counts here.
//
// Where the kernel cannot say (outside Linux, or for unix sockets, whose
// received bytes are not counted), new connections count as cut and idle
// ones as idle. Silent connections never hold a drain past its deadline:
// those older than 5 seconds are closed by net/http's Shutdown at the end
// of the grace (and counted nowhere, like idle keep-alive connections
// closed then), the others at the deadline (and counted in Report.Idle).
//
// # Accept errors
//
// The listeners given to Serve and Listen are wrapped: an accept that
// fails for a reason that passes (EMFILE and ENFILE: out of descriptors;
// ENOBUFS, ENOMEM; ECONNABORTED) is retried inside the wrapper with a
// backoff of 5ms doubling up to 1s, as net/http does, but logged through
// Options.Logger once per burst instead of once per failure: a warning
// with the error when the burst begins, and a line with the number of
// failures when accepting works again (at the first accept a second or
// more after the last failure) or the listener closes. net/http never
// sees these errors. Connections the kernel cannot hand over wait in its
// queue meanwhile; the ones already accepted keep being served. A served
// accept costs one interface call and allocates nothing more.
//
// The context passed to Shutdown is the deadline, as with
// http.Server.Shutdown; under systemd it must end before TimeoutStopSec=.
package drain
