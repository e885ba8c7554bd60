package baton

import (
	"context"

	"github.com/baton-dev/baton/drain"
)

// Draining returns a channel that is closed when the generation serving
// ctx begins to drain: at a stop, or once a new generation has taken over
// after a reload. ctx is the context of a request of an HTTP server given
// to Run (r.Context(), or one derived from it) or the ctx of a Stream
// handler. For any other context it returns nil, a channel that never
// closes, so a handler selecting on it also works outside Run (in an
// httptest.Server, say).
//
// A long-lived exchange finishes what it has under way when the channel
// closes and then ends in a way its client resumes from, on the new
// generation (see the README for WebSocket, server-sent events, HTTP/2
// and gRPC). The connections still open at the drain's deadline are cut
// and counted.
func Draining(ctx context.Context) <-chan struct{} { return drain.Begun(ctx) }
