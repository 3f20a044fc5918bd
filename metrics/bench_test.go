package metrics_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/metrics"
	"github.com/drvkit/drvkit/refcount"
)

// benchRegistry is a registry whose driver matches every USBDevice nub.
func benchRegistry(b *testing.B) *driver.Registry {
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	if err := r.RegisterPersonality(driver.Personality{Name: "disk", Class: "TestDisk", ProviderClass: usbbus.ClassDevice,
		New: func() driver.Driver { return nopDriver{} }}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return r
}

var benchProps = driver.NewProperties(map[string]any{usbbus.PropVendorID: uint64(0x1234)})

// BenchmarkScrape measures one /metrics scrape — gather and text encoding —
// of a registry with 10,000 plugged devices (each a nub and a started
// driver: 20,001 services, all traced, as the daemon runs by default).
func BenchmarkScrape(b *testing.B) {
	refcount.TraceAll()
	r := benchRegistry(b)
	bus := r.Root()
	const devices = 10000
	for i := range devices {
		if err := r.Publish(bus, r.NewNub(usbbus.ClassDevice, fmt.Sprintf("%d-%d", 1+i%8, i), benchProps)); err != nil {
			b.Fatal(err)
		}
	}
	c := metrics.New(metrics.Config{Registry: r, Refcount: true})
	defer c.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/scrape")
	for _, s := range r.Services() {
		if s != bus && s.Class() == usbbus.ClassDevice {
			s.Terminate()
		}
	}
	if err := r.WaitQuiet(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRetainRelease is refcount's untraced hot path with and without
// a metrics collector following a busy registry (compare the two with
// benchstat): the collector reads reference counts at scrape time only, so
// the hot path does not change.
func BenchmarkRetainRelease(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) {
			if on {
				r := benchRegistry(b)
				c := metrics.New(metrics.Config{Registry: r, Refcount: true})
				defer c.Close()
				reg := prometheus.NewRegistry()
				reg.MustRegister(c)
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
			// Untraced, as in production: tracing is fixed at Init
			// (leaktest.Main traces everything in this binary).
			refcount.TraceOff()
			var o refcount.Object
			o.Init("BenchUntracedMetrics", nil)
			refcount.TraceAll()
			defer o.Release()
			b.ReportAllocs()
			for b.Loop() {
				o.Retain()
				o.Release()
			}
		})
	}
}

// BenchmarkLifecycle runs one device's whole lifecycle — publish, match,
// Start, terminate, Stop, detach, free: 7 steps — on three registries in
// turn, in the same loop, so that a shared machine's noise hits all three
// alike: one nobody follows; one with a no-op lifecycle subscriber (what
// `drvctl serve` always has: its monitor hub); one with that subscriber and
// the metrics collector. It reports the mean time of each and the ratios
// metrics/subscribed (the daemon's cost of metrics) and
// metrics/unobserved (an embedder's who subscribes nothing else).
func BenchmarkLifecycle(b *testing.B) {
	modes := []string{"unobserved", "subscribed", "metrics"}
	regs := make([]*driver.Registry, len(modes))
	for i, mode := range modes {
		regs[i] = benchRegistry(b)
		if mode != "unobserved" {
			cancel := regs[i].SubscribeLifecycle(func(driver.LifecycleEvent) {})
			defer cancel()
		}
		if mode == "metrics" {
			c := metrics.New(metrics.Config{Registry: regs[i], Refcount: true})
			defer c.Close()
		}
	}
	ctx := context.Background()
	var spent [3]time.Duration
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		for k := range regs {
			i := (n + k) % len(regs) // rotate who goes first
			t0 := time.Now()
			nub := regs[i].NewNub(usbbus.ClassDevice, "2-1", benchProps)
			if err := regs[i].Publish(nil, nub); err != nil {
				b.Fatal(err)
			}
			if err := nub.TerminateSync(ctx); err != nil {
				b.Fatal(err)
			}
			spent[i] += time.Since(t0)
		}
		n++
	}
	for i, mode := range modes {
		b.ReportMetric(float64(spent[i].Nanoseconds())/float64(n), "ns/"+mode)
	}
	b.ReportMetric(float64(spent[2])/float64(spent[1]), "metrics/subscribed")
	b.ReportMetric(float64(spent[2])/float64(spent[0]), "metrics/unobserved")
}
