package bench

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/load"
)

// TestTimelineChart draws a run with a storm of failures at one of two
// reloads: the SVG carries its fonts, and the count of each reload's
// failures, which the capped marks alone cannot show.
func TestTimelineChart(t *testing.T) {
	res := &load.Result{Mode: load.KeepAlive, Elapsed: 10 * time.Second, Requests: 3000}
	for i := range 2000 {
		res.Samples = append(res.Samples, load.Sample{Start: time.Duration(i) * 5 * time.Millisecond, Latency: time.Millisecond, Class: load.ClassOK})
	}
	for i := range 1000 { // all within 100 ms of the second reload
		res.Samples = append(res.Samples, load.Sample{Start: 6*time.Second + time.Duration(i)*100*time.Microsecond, Latency: time.Millisecond, Class: load.ClassRefused})
	}
	res.OK, res.Failures.Refused = 2000, 1000
	res.Events = []load.Event{{Index: 0, Start: 2 * time.Second, Duration: 100 * time.Millisecond}, {Index: 1, Start: 6 * time.Second, Duration: 100 * time.Millisecond}}
	path := filepath.Join(t.TempDir(), "timeline.svg")
	if d := os.Getenv("CHART_KEEP"); d != "" {
		path = filepath.Join(d, "timeline.svg")
	}
	if err := TimelineChart(path, "reload", "reload", []*load.Result{res}, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	svg := string(b)
	if !strings.Contains(svg, "@font-face") {
		t.Errorf("the SVG embeds no font")
	}
	if !strings.Contains(svg, "1000 failed") {
		t.Errorf("the SVG does not count the second reload's 1000 failures")
	}
	if n := len(regexp.MustCompile(`>[0-9]+ failed<`).FindAllString(svg, -1)); n != 1 {
		t.Errorf("%d failure counts in the SVG, want one: the reload without failures has none", n)
	}
}
