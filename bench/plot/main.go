// Plot draws the PNG plots of the bench/ scripts from tab-separated
// data, so that the scripts need nothing but Go to draw.
//
// Usage:
//
//	plot -kind KIND -o OUT.png [-title T] [-x LABEL] [-y LABEL]
//	     [-logx] [-logy] [-xticks 1,4,16] [DATA]
//
// DATA (standard input when absent) holds one record a line, fields
// separated by tabs; blank lines and lines starting with # are skipped.
// KIND says what a record is:
//
//	lines   SERIES  X  Y   one line with points per SERIES, in the order
//	                       the series first appear (legend in that order)
//	box     GROUP   VALUE  one box plot per GROUP (median, quartiles,
//	                       whiskers at 1.5 IQR, outliers as points)
//	bars    GROUP   VALUE  one bar per GROUP
//
// It is a separate module (bench/plot/go.mod) so that gonum.org/v1/plot
// and its fonts stay out of mworker's own dependencies.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func main() {
	kind := flag.String("kind", "lines", "lines, box or bars")
	out := flag.String("o", "", "PNG file to write")
	title := flag.String("title", "", "title")
	xlabel := flag.String("x", "", "label of the X axis")
	ylabel := flag.String("y", "", "label of the Y axis")
	logx := flag.Bool("logx", false, "logarithmic X axis (lines)")
	logy := flag.Bool("logy", false, "logarithmic Y axis")
	xticks := flag.String("xticks", "", "comma-separated X tick values (lines)")
	flag.Parse()
	if err := run(*kind, *out, *title, *xlabel, *ylabel, *logx, *logy, *xticks, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// series is one named group of records, in input order.
type series struct {
	name string
	rows [][]float64
}

func run(kind, out, title, xlabel, ylabel string, logx, logy bool, xticks string, args []string) error {
	if out == "" {
		return fmt.Errorf("no output file: give -o FILE.png")
	}
	in := io.Reader(os.Stdin)
	if len(args) > 0 {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	want := map[string]int{"lines": 2, "box": 1, "bars": 1}[kind]
	if want == 0 {
		return fmt.Errorf("unknown -kind %q: use lines, box or bars", kind)
	}
	data, err := read(in, want)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return fmt.Errorf("no data")
	}

	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	if logy {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	switch kind {
	case "lines":
		if logx {
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		}
		if xticks != "" {
			var ticks []plot.Tick
			for _, s := range strings.Split(xticks, ",") {
				v, err := strconv.ParseFloat(s, 64)
				if err != nil {
					return fmt.Errorf("bad -xticks value %q: give numbers separated by commas", s)
				}
				ticks = append(ticks, plot.Tick{Value: v, Label: s})
			}
			p.X.Tick.Marker = plot.ConstantTicks(ticks)
		}
		for i, s := range data {
			xys := make(plotter.XYs, len(s.rows))
			for j, r := range s.rows {
				xys[j].X, xys[j].Y = r[0], r[1]
			}
			l, pts, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			l.Dashes = plotutil.Dashes(i)
			pts.Color = plotutil.Color(i)
			pts.Shape = plotutil.Shape(i)
			p.Add(l, pts)
			p.Legend.Add(s.name, l, pts)
		}
		p.Legend.Top = true
		p.Legend.Left = true
	case "box", "bars":
		names := make([]string, len(data))
		for i, s := range data {
			names[i] = s.name
			vals := make(plotter.Values, len(s.rows))
			for j, r := range s.rows {
				vals[j] = r[0]
			}
			if kind == "box" {
				b, err := plotter.NewBoxPlot(vg.Points(40), float64(i), vals)
				if err != nil {
					return err
				}
				b.FillColor = plotutil.Color(i)
				p.Add(b)
				continue
			}
			b, err := plotter.NewBarChart(plotter.Values{vals[len(vals)-1]}, vg.Points(40))
			if err != nil {
				return err
			}
			b.XMin = float64(i)
			b.Color = plotutil.Color(i)
			p.Add(b)
		}
		p.NominalX(names...)
		p.X.Min, p.X.Max = -0.6, float64(len(data))-0.4
		if !logy {
			p.Y.Min = 0
		}
	}
	return p.Save(16*vg.Centimeter, 10*vg.Centimeter, out)
}

// read parses the records, each NAME followed by n numbers.
func read(in io.Reader, n int) ([]*series, error) {
	var all []*series
	byName := map[string]*series{}
	sc := bufio.NewScanner(in)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Split(text, "\t")
		if len(f) != n+1 {
			return nil, fmt.Errorf("line %d: %q has %d fields, want a name and %d number(s) separated by tabs", line, text, len(f), n)
		}
		row := make([]float64, n)
		for i := range n {
			v, err := strconv.ParseFloat(strings.TrimSpace(f[i+1]), 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %q is not a number", line, f[i+1])
			}
			row[i] = v
		}
		s := byName[f[0]]
		if s == nil {
			s = &series{name: f[0]}
			byName[f[0]] = s
			all = append(all, s)
		}
		s.rows = append(s.rows, row)
	}
	return all, sc.Err()
}
