// Package metricstest reads what a drvkit metrics endpoint exposes, for
// tests: parse an exposition and look up one series by its labels.
package metricstest

import (
	"io"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is a parsed exposition, by metric name.
type Families map[string]*dto.MetricFamily

// Parse parses a Prometheus text exposition (what GET /metrics returns).
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Value is the value of the first series of name whose labels include
// every want ("key=value"): a counter's or gauge's value, a histogram's
// sample count. It is 0 when no series matches, as for a counter that has
// not counted yet.
func (f Families) Value(name string, want ...string) float64 {
	mf, ok := f[name]
	if !ok {
		return 0
	}
next:
	for _, m := range mf.GetMetric() {
		have := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for _, w := range want {
			k, v, _ := strings.Cut(w, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return 0
}

// Has reports whether the exposition has the metric at all.
func (f Families) Has(name string) bool {
	_, ok := f[name]
	return ok
}
