package load

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkRun measures the client's cost per request against a trivial
// local server (which shares the CPU).
func BenchmarkRun(b *testing.B) {
	s := newHTTPServer(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(PIDHeader, "1")
		io.WriteString(w, "hello\n")
	})
	for _, mode := range []Mode{KeepAlive, NewConnection} {
		b.Run(mode.String(), func(b *testing.B) {
			b.ReportAllocs()
			res, err := Run(b.Context(), s.URL, Options{Clients: 8, Mode: mode, MaxRequests: int64(b.N), Duration: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			if res.Failed() != 0 {
				b.Fatalf("%d failed\n%v", res.Failed(), res)
			}
			b.ReportMetric(res.RPS, "req/s")
		})
	}
}
