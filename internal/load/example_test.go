package load_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

func ExampleRun() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(load.PIDHeader, "1234")
		io.WriteString(w, "hello\n")
	}))
	defer srv.Close()

	res, err := load.Run(context.Background(), srv.URL, load.Options{
		Clients:     8,
		Mode:        load.KeepAlive,
		Duration:    5 * time.Second,
		MaxRequests: 1000,
		Timeout:     time.Second,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("requests:", res.Requests, "failed:", res.Failed())
	fmt.Println("answered by:", res.PIDs)
	// Output:
	// requests: 1000 failed: 0
	// answered by: map[1234:1000]
}

func ExampleSchedule() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	}))
	defer srv.Close()

	res, err := load.Run(context.Background(), srv.URL, load.Options{
		Clients:  4,
		Duration: 10 * time.Second, // an upper bound: Tail ends the load earlier
		Schedule: load.Schedule{
			Start: 100 * time.Millisecond,
			Every: 100 * time.Millisecond,
			Count: 3,
			Run: func(ctx context.Context, i int) error {
				// e.g. exec.CommandContext(ctx, "systemctl", "reload", "webapp").Run()
				return nil
			},
		},
		Tail:   100 * time.Millisecond,
		Margin: 20 * time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("events:", len(res.Events), "failed:", res.Failed())
	for _, ev := range res.Events {
		fmt.Println(ev.Index, ev.Window.Requests > 0, ev.Error == "")
	}
	// Output:
	// events: 3 failed: 0
	// 0 true true
	// 1 true true
	// 2 true true
}
