package hotplug_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

type latDriver struct{ started chan<- time.Time }

func (d latDriver) Start(ctx context.Context, s *driver.Service) error {
	d.started <- time.Now()
	return nil
}
func (latDriver) Stop(*driver.Service) {}

func percentile(ds []time.Duration, p float64) time.Duration {
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

// BenchmarkBridgeEventToStart measures the time from handing the bridge a
// USB device add to the matched driver's Start (p50, p99), and compares
// with the floor measured in the same run: creating and publishing the nub
// directly (what the bridge must do anyway), event parsing excluded.
func BenchmarkBridgeEventToStart(b *testing.B) {
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	defer r.Close(context.Background())
	started := make(chan time.Time, 1)
	if err := r.RegisterPersonality(driver.Personality{Name: "lat", ProviderClass: usbbus.ClassDevice,
		Match: []driver.Match{driver.MatchValue(usbbus.PropVendorID, 0x1234)},
		New:   func() driver.Driver { return latDriver{started} }}); err != nil {
		b.Fatal(err)
	}
	const dev = "/devices/pci0000:00/0000:00:02.0/usb2/2-1"
	add, _ := hotplug.NewEvent(hotplug.ActionAdd, dev, "usb", 0, usbDevEnv(2)...)
	remove, _ := hotplug.NewEvent(hotplug.ActionRemove, dev, "usb", 0, usbDevEnv(2)...)

	// Baseline: NewNub + Publish on this goroutine.
	props := driver.NewProperties(map[string]any{usbbus.PropVendorID: uint64(0x1234)})
	var base []time.Duration
	for range 2000 {
		t0 := time.Now()
		nub := r.NewNub(usbbus.ClassDevice, "2-1", props)
		go func() { _ = r.Publish(nil, nub) }()
		base = append(base, (<-started).Sub(t0))
		nub.Terminate()
	}
	_ = r.WaitQuiet(context.Background())

	br := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: b.TempDir()})
	defer br.Close()
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		br.Handle(add)
		lat = append(lat, (<-started).Sub(t0))
		br.Handle(remove)
	}
	b.StopTimer()
	_ = br.Flush(context.Background())
	_ = r.WaitQuiet(context.Background())
	p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(p50)/float64(percentile(base, 0.50)), "p50-x-direct")
	b.ReportMetric(float64(p99)/float64(percentile(base, 0.99)), "p99-x-direct")
}
