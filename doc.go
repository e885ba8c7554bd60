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
// deadline. Serve is the short form for a single HTTP server.
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
package baton
