package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
)

// BenchmarkInspectJSON is `drvctl inspect -o json` end to end — the
// daemon's selection and encoding, the streamed reply over its socket, the
// CLI printing it — at 1k, 10k and 100k services (SCSI LUN nubs published
// straight into the daemon's registry, traced as the daemon runs). The
// goal at 100k is 2 s.
func BenchmarkInspectJSON(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			o := simOptions(b)
			d := startServe(b, o)
			bus := d.reg.NewNub("BenchBus", "bench", driver.Properties{})
			if err := d.reg.Publish(nil, bus); err != nil {
				b.Fatal(err)
			}
			for i := range n {
				hctl := fmt.Sprintf("9:0:%d:%d", i/256, i%256)
				nub := d.reg.NewNub("BenchLUN", hctl, driver.NewProperties(map[string]any{
					"devpath": "/devices/pci0000:00/0000:00:05.0/host9/target9:0:0/" + hctl,
					"type":    int64(0), "vendor": "QEMU", "model": "QEMU HARDDISK", "rev": "2.5+", "hctl": hctl}))
				if err := d.reg.Publish(bus, nub); err != nil {
					b.Fatal(err)
				}
			}
			var size int
			b.ResetTimer()
			for b.Loop() {
				e, _, errb := testEnv(nil, 0)
				var out countingWriter // stdout: a file or a pipe, not memory
				e.stdout = &out
				if code := run([]string{"inspect", "-o", "json", "--socket", o.socket}, e); code != 0 {
					b.Fatalf("inspect: exit %d: %s", code, errb)
				}
				size = int(out)
			}
			b.StopTimer()
			b.ReportMetric(float64(size)/float64(n), "B/service")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/inspect")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := bus.TerminateSyncWith(ctx, driver.CauseAdmin); err != nil {
				b.Fatal(err)
			}
		})
	}
}

type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
