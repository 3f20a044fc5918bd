package reliability

import (
	"context"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/internal/faultinject"
)

type benchDriver struct{}

func (benchDriver) Start(context.Context, *driver.Service) error { return nil }
func (benchDriver) Stop(*driver.Service)                         {}

// cycle publishes a nub, lets a driver start on it and terminates it
// synchronously: every lifecycle hook but the job's and the client's.
func cycle(b *testing.B, r *driver.Registry) {
	nub := r.NewNub("BenchNub", "n", driver.Properties{})
	if err := r.Publish(nil, nub); err != nil {
		b.Fatal(err)
	}
	if err := nub.TerminateSync(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkHooksDisabled measures Publish+Start+TerminateSync with the
// fault hooks compiled in and no injector installed. In-run metrics: the
// number of hook sites one cycle passes (counted by an injector without
// rules), the cost of one disabled hook measured in the same run, and
// their product as a share of the cycle. The A/B against a binary without
// hooks is `go test -tags drvkit_nofaultinject -bench HooksDisabled`
// (figures in the README).
func BenchmarkHooksDisabled(b *testing.B) {
	r := driver.NewRegistry(driver.WithLogger(discard))
	defer r.Close(context.Background())
	if err := r.RegisterPersonality(driver.Personality{Name: "bench", ProviderClass: "BenchNub",
		New: func() driver.Driver { return benchDriver{} }}); err != nil {
		b.Fatal(err)
	}
	// Sites per cycle: an injector without rules only counts.
	var sites uint64
	if in := faultinject.New(); true {
		if un, err := in.Install(); err == nil {
			cycle(b, r)
			un()
			for _, n := range in.Stats().Hits {
				sites += n
			}
		}
	}
	// One disabled hook, timed here.
	const n = 1 << 22
	var tg faultinject.Target = r.Root()
	start := time.Now()
	for range n {
		_ = faultinject.At(faultinject.Stop, tg)
	}
	perHook := float64(time.Since(start).Nanoseconds()) / n

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		cycle(b, r)
	}
	b.StopTimer()
	perCycle := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(float64(sites), "hooks/op")
	b.ReportMetric(perHook, "ns/hook")
	b.ReportMetric(100*float64(sites)*perHook/perCycle, "hook-%")
}
