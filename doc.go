// Package baton runs a Go service's servers (HTTP with h2c or TLS, gRPC,
// raw streams, datagrams), each on a socket named after its systemd
// .socket unit, as one systemd service: baton.Run(ctx, opts,
// baton.HTTP(baton.Socket{Name: "http"}, srv), baton.GRPC(...), ...).
//
// Run takes every socket by name from systemd (socket activation), from
// the previous generation during a reload, or binds a fallback address
// when run without systemd; it sends one READY=1 when all servers serve,
// swaps in a new binary on reload without dropping a queued, in-flight or
// kept-alive connection, and on SIGTERM drains all servers within one
// deadline. Serve is the short form for a single HTTP server. Main is
// Run with the command line a unit needs, for a main of one call:
// `NAME serve` runs the servers, `NAME reload` (ExecReload=) asks the
// running generation to swap and waits for the outcome.
//
// Each kind of server keeps its protocol's behaviour in one place: how it
// serves a socket, how it stops taking work at a hand-over, how it drains
// (HTTP: "Connection: close" and GOAWAY, then an idle grace; gRPC:
// GracefulStop; streams: their context ends; datagrams: one reader at a
// time) and how it is cut at the deadline. A long-lived exchange learns
// that its generation began to drain from Draining(ctx), the request's
// context of an HTTP handler or a Stream handler's ctx, and ends cleanly
// and resumably (WebSocket close 1001, the end of an event stream) so
// that its client resumes on the next generation; a stop's drain keeps
// inside TimeoutStopSec= (Options.StopTimeout), tells systemd
// (EXTEND_TIMEOUT_USEC=) while connections are still leaving, and cuts
// and counts what stays. The packages under it stay
// protocol-blind: activation (named sockets), systemd (notify, watchdog,
// journal), drain (connection tracking and the drain order) and upgrade
// (the binary swap, its handshake and the control socket). gRPC plugs in
// through the small GRPCServer interface, so baton imports no gRPC.
// cmd/webapp is the reference service built with it.
//
// Behind a load balancer or under Kubernetes, a stop must take the
// instance out of rotation before it stops accepting: the balancer (or
// kube-proxy, which removes a terminating pod's endpoint concurrently
// with SIGTERM) still sends new connections for a moment. Serve a
// Readiness (Options.Readiness) on a path such as /readyz and set
// Options.ShutdownDelay: when the context ends, Readiness answers 503 at
// once while the servers keep accepting and serving for the delay
// (STATUS= says so); then the drain runs as usual (STOPPING=1, within
// DrainTimeout). A hand-over on reload leaves Readiness ready. Choose
// the delay as at least the balancer's check interval times its fall
// count plus a margin (HAProxy "inter 500ms fall 3": 1.5 s, so 2 s), or
// the endpoint propagation time under Kubernetes (a few seconds), and
// keep ShutdownDelay + DrainTimeout below TimeoutStopSec= or
// terminationGracePeriodSeconds. The zero delay suits systemd alone:
// the socket unit outlives the process, so a restart refuses nothing
// and should not wait.
package baton
