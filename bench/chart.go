package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/baton-dev/baton/internal/load"
)

// Chart geometry and colours.
const (
	chartWidth = 26 * vg.Centimeter
	rowHeight  = 9 * vg.Centimeter
	// maxMarksPerBin caps the failure markers drawn per time bin: a
	// refused-connection storm fails thousands of requests a second.
	maxMarksPerBin = 8
)

var (
	blue   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	orange = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	grey   = color.RGBA{R: 0x88, G: 0x88, B: 0x88, A: 0xff}
	red    = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	green  = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	purple = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	band   = color.NRGBA{R: 0xff, G: 0xc0, B: 0x00, A: 0x60}
)

// TimelineChart writes to path an SVG with one latency-over-time plot per
// run: p50, p99 and max latency of the successful requests per bin (log
// scale), each disruption shaded from its start to its return with a
// dashed line at its start, and each failed request as a red triangle at its
// start and the time it took to fail.
func TimelineChart(path, title, noun string, runs []*load.Result, bin time.Duration) error {
	var plots [][]*plot.Plot
	for _, res := range runs {
		p, err := timeline(fmt.Sprintf("%s, %s", title, shortMode(res.Mode)), noun, res, bin)
		if err != nil {
			return err
		}
		plots = append(plots, []*plot.Plot{p})
	}
	return saveRows(path, plots)
}

func timeline(title, noun string, res *load.Result, bin time.Duration) (*plot.Plot, error) {
	p := plot.New()
	event := noun + "s"
	n := len(res.Events)
	if n == 1 {
		event = noun
	}
	p.Title.Text = fmt.Sprintf("%s: %d %s, %d of %d requests failed", title, n, event, res.Failed(), res.Requests)
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.X.Label.Text = "time since the load started (s)"
	p.Y.Label.Text = "latency (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(8)

	nbins := int(res.Elapsed/bin) + 1
	ok := make([][]time.Duration, nbins)
	var fails []load.Sample
	for _, s := range res.Samples {
		i := min(int(s.Start/bin), nbins-1)
		if s.Class == load.ClassOK {
			ok[i] = append(ok[i], s.Latency)
		} else {
			fails = append(fails, s)
		}
	}
	// The y range, in ms: from a decade below the smallest p50 to two
	// decades above the largest latency, room for the legend.
	lo, hi := math.Inf(1), 0.0
	p50, p99, pmax := make(plotter.XYs, 0, nbins), make(plotter.XYs, 0, nbins), make(plotter.XYs, 0, nbins)
	for i, lat := range ok {
		if len(lat) == 0 {
			p50, p99, pmax = append(p50, gap), append(p99, gap), append(pmax, gap)
			continue
		}
		slices.Sort(lat)
		x := (time.Duration(i)*bin + bin/2).Seconds()
		p50 = append(p50, plotter.XY{X: x, Y: ms(load.Percentile(lat, 50))})
		p99 = append(p99, plotter.XY{X: x, Y: ms(load.Percentile(lat, 99))})
		pmax = append(pmax, plotter.XY{X: x, Y: ms(lat[len(lat)-1])})
		lo = min(lo, ms(load.Percentile(lat, 50)))
		hi = max(hi, ms(lat[len(lat)-1]))
	}
	for _, f := range fails {
		hi = max(hi, ms(f.Latency))
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0.01, 1000
	}
	ymin := math.Pow(10, math.Floor(math.Log10(lo))-1)
	ymax := math.Pow(10, math.Ceil(math.Log10(max(hi, ymin*10)))+1)
	p.Y.Min, p.Y.Max = ymin, ymax
	p.X.Min, p.X.Max = 0, res.Elapsed.Seconds()

	for i, e := range res.Events {
		x0, x1 := e.Start.Seconds(), max(e.End().Seconds(), e.Start.Seconds()+0.01)
		poly, err := plotter.NewPolygon(plotter.XYs{{X: x0, Y: ymin}, {X: x1, Y: ymin}, {X: x1, Y: ymax}, {X: x0, Y: ymax}})
		if err != nil {
			return nil, err
		}
		poly.Color = band
		poly.LineStyle.Width = 0
		start, err := plotter.NewLine(plotter.XYs{{X: x0, Y: ymin}, {X: x0, Y: ymax}})
		if err != nil {
			return nil, err
		}
		start.Color = grey
		start.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(poly, start)
		if i == 0 {
			p.Legend.Add(noun+" (start to return)", poly)
		}
	}
	for _, s := range []struct {
		xys   plotter.XYs
		name  string
		c     color.Color
		width vg.Length
	}{
		{pmax, "max", grey, vg.Points(0.6)},
		{p99, "p99", orange, vg.Points(1)},
		{p50, "p50", blue, vg.Points(1)},
	} {
		for j, seg := range segments(s.xys) {
			l, err := plotter.NewLine(seg)
			if err != nil {
				return nil, err
			}
			l.Color, l.Width = s.c, s.width
			p.Add(l)
			if j == 0 {
				p.Legend.Add(fmt.Sprintf("%s per %v", s.name, bin), l)
			}
		}
	}
	if len(fails) > 0 {
		var xys plotter.XYs
		perBin := map[int]int{}
		for _, f := range fails {
			i := int(f.Start / bin)
			if perBin[i] >= maxMarksPerBin {
				continue
			}
			perBin[i]++
			xys = append(xys, plotter.XY{X: f.Start.Seconds(), Y: min(max(ms(f.Latency), ymin), ymax)})
		}
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			return nil, err
		}
		sc.GlyphStyle.Shape = draw.PyramidGlyph{}
		sc.GlyphStyle.Color = red
		sc.GlyphStyle.Radius = vg.Points(3)
		p.Add(sc)
		p.Legend.Add(fmt.Sprintf("failed request (%d; at most %d marks per %v, counts per %s above)", res.Failed(), maxMarksPerBin, bin, noun), sc)
		// The count of each disruption's failures, over its band: the
		// marks alone cannot show a storm of thousands.
		var at plotter.XYs
		var counts []string
		for _, e := range res.Events {
			from, to := e.Start-time.Second, e.End()+time.Second
			n := 0
			for _, f := range fails {
				if f.Start >= from && f.Start <= to {
					n++
				}
			}
			if n > 0 {
				at = append(at, plotter.XY{X: e.Start.Seconds(), Y: ymax / 4})
				counts = append(counts, fmt.Sprintf("%d failed", n))
			}
		}
		if len(at) > 0 {
			labels, err := plotter.NewLabels(plotter.XYLabels{XYs: at, Labels: counts})
			if err != nil {
				return nil, err
			}
			for i := range labels.TextStyle {
				labels.TextStyle[i].Color = red
				labels.TextStyle[i].Font.Size = vg.Points(8)
			}
			p.Add(labels)
		}
	}
	return p, nil
}

// gap marks a bin without successful requests; segments splits lines there.
var gap = plotter.XY{X: math.NaN(), Y: math.NaN()}

func segments(xys plotter.XYs) []plotter.XYs {
	var out []plotter.XYs
	var cur plotter.XYs
	for _, xy := range xys {
		if math.IsNaN(xy.X) {
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, xy)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func shortMode(m load.Mode) string {
	if m == load.NewConnection {
		return "new connections"
	}
	return "keep-alive"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// SteadyChart writes scenario 1's throughput per round, webapp against
// the plain server (and webapp with its http socket only), one plot per
// mode.
func SteadyChart(path string, s *Steady) error {
	var plots [][]*plot.Plot
	for _, m := range s.Modes {
		p := plot.New()
		r := SpreadOf(m.Ratios())
		p.Title.Text = fmt.Sprintf("steady state, %s: throughput per round (webapp / plain: median %.3f, %.3f–%.3f)", modeName(m.Mode), r.Median, r.Min, r.Max)
		p.X.Label.Text = "round"
		p.Y.Label.Text = "requests/s"
		p.Add(plotter.NewGrid())
		p.Legend.Top, p.Legend.Left = false, false
		p.Legend.TextStyle.Font.Size = vg.Points(8)
		for _, srv := range []struct {
			name string
			runs []RunStats
			c    color.Color
		}{{"webapp", m.Webapp, blue}, {"plain net/http", m.Plain, orange}, {"four servers without baton", m.PlainFour, purple}, {"webapp, http socket only", m.HTTPOnly, green}} {
			if len(srv.runs) == 0 {
				continue
			}
			xys := make(plotter.XYs, len(srv.runs))
			for i, st := range srv.runs {
				xys[i] = plotter.XY{X: float64(i + 1), Y: st.RPS}
			}
			l, sc, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			l.Color, sc.Color = srv.c, srv.c
			p.Add(l, sc)
			p.Legend.Add(srv.name, l, sc)
		}
		p.X.Min, p.X.Max = 0.5, float64(len(m.Webapp))+0.5
		p.Y.Min = 0
		p.X.Tick.Marker = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
			var ts []plot.Tick
			for i := 1; i <= len(m.Webapp); i++ {
				ts = append(ts, plot.Tick{Value: float64(i), Label: fmt.Sprint(i)})
			}
			return ts
		})
		plots = append(plots, []*plot.Plot{p})
	}
	return saveRows(path, plots)
}

// StopChart writes scenario 4's SIGTERM-to-exit times, one dot per round
// and case.
func StopChart(path string, s *Stop) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("stop: time from SIGTERM to exit, %s (dashed: time left of the request in flight)", rounds(s.Rounds))
	p.Y.Label.Text = "seconds"
	p.Add(plotter.NewGrid())
	names := make([]string, len(s.Cases))
	for i, c := range s.Cases {
		names[i] = c.Server + "\n" + c.Short
		xys := make(plotter.XYs, len(c.Exit))
		for j, d := range c.Exit {
			// Spread the rounds' dots a little so that equal values show.
			off := 0.0
			if len(c.Exit) > 1 {
				off = 0.2 * (float64(j)/float64(len(c.Exit)-1) - 0.5)
			}
			xys[j] = plotter.XY{X: float64(i) + off, Y: d.Seconds()}
		}
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			return err
		}
		sc.GlyphStyle.Shape = draw.CircleGlyph{}
		sc.GlyphStyle.Color = blue
		if c.Server != "webapp" {
			sc.GlyphStyle.Color = orange
		}
		p.Add(sc)
		if c.Request > 0 {
			left := (c.Request - c.RanBefore).Seconds()
			l, err := plotter.NewLine(plotter.XYs{{X: float64(i) - 0.3, Y: left}, {X: float64(i) + 0.3, Y: left}})
			if err != nil {
				return err
			}
			l.Color = green
			l.Dashes = []vg.Length{vg.Points(3), vg.Points(2)}
			p.Add(l)
		}
	}
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.6, float64(len(names))-0.4
	p.Y.Min = 0
	return saveRows(path, [][]*plot.Plot{{p}})
}

// saveRows draws plots as aligned rows of one SVG.
func saveRows(path string, plots [][]*plot.Plot) error {
	// The fonts go in the SVG: a viewer without them would draw other
	// ones, whose widths overflow the titles and the legends.
	c := vgsvg.NewWith(vgsvg.UseWH(chartWidth, rowHeight*vg.Length(len(plots))), vgsvg.EmbedFonts(true))
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Centimeter, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
