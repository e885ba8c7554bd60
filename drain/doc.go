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
//  2. Every response written from now on, including those of requests
//     already in flight, carries "Connection: close", so each kept-alive
//     client learns after its next answer that it must reconnect.
//  3. For a grace (Options.IdleGrace, one second by default) the servers
//     keep serving kept-alive connections, so that a client which sent
//     its next request just as the drain began is still answered.
//     net/http's own Shutdown, and SetKeepAlivesEnabled(false), close idle
//     connections at once and lose exactly those requests.
//  4. The servers' Shutdown closes the connections that are still idle and
//     waits for requests in flight; raw and hijacked connections are waited
//     for until their owners close them.
//  5. When the context ends first, whatever is left is closed by force
//     and counted: Shutdown returns an error wrapping ErrCut and the
//     context's error, and a Report saying how many connections were cut.
//
// The context passed to Shutdown is the deadline, as with
// http.Server.Shutdown; under systemd it must end before TimeoutStopSec=.
package drain
