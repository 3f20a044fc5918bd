package sim_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/scsibus"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

// unplugSeqnum marks the first event of a scale scenario's unplug half.
const unplugSeqnum = 1 << 40

// scaleScenario is n devices, SCSI LUNs and USB devices mixed, plugged and
// then unplugged in the order they came. The USB share is a tenth, capped
// by what two buses can number (126 devices each, hubs included): half
// are storage sticks (a USB device, its interface, a SCSI host and a LUN),
// half vendor-specific devices behind hubs. The rest are LUNs of the
// virtio-scsi host, disks and CD-ROMs alternately.
func scaleScenario(n int) (text string, usb int) {
	var plug, unplug []string
	usb = min(n/10, 2*(126-4))
	hubs := 0
	for i := range usb {
		bus, slot := 1+i%2, i/2
		hub := fmt.Sprintf("%d-%d", bus, 1+slot/31)
		if slot%31 == 0 {
			plug = append(plug, fmt.Sprintf("plug usb %s vid=05e3 pid=0610 class=09/00/00 ifaces=09/00/00", hub))
			unplug = append(unplug, "unplug "+hub)
			hubs++
		}
		port := fmt.Sprintf("%s.%d", hub, 1+slot%31)
		ifaces := "ff/00/00"
		if i%4 < 2 {
			ifaces = "08/06/50"
		}
		plug = append(plug, fmt.Sprintf("plug usb %s vid=1234 pid=%04x serial=S%d ifaces=%s", port, i, i, ifaces))
		unplug = append(unplug, "unplug "+port)
	}
	for i := range n - usb {
		typ := 0
		if i%2 == 1 {
			typ = 5
		}
		h := fmt.Sprintf("0:%d:%d:%d", i/(256*16384), i%256, (i/256)%16384)
		plug = append(plug, fmt.Sprintf("scsi add %s type=%d", h, typ))
		unplug = append(unplug, "scsi remove "+h)
	}
	// Hubs go last, after what is behind them.
	slices.SortStableFunc(unplug, func(a, b string) int {
		return strings.Count(b, ".") - strings.Count(a, ".")
	})
	return strings.Join(plug, "\n") + fmt.Sprintf("\nseqnum %d\n", uint64(unplugSeqnum)) + strings.Join(unplug, "\n") + "\n", usb
}

// scaleEvents runs the scale scenario of n devices through the simulator
// and returns the events of its plug and unplug halves.
func scaleEvents(tb testing.TB, n int) (plug, unplug []hotplug.Event) {
	tb.Helper()
	text, _ := scaleScenario(n)
	sc, err := sim.ParseScenarioString("scale", text)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := sim.New(sc, sim.Config{SkipWaits: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	for {
		ev, err := s.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return plug, unplug
		}
		if err != nil {
			tb.Fatal(err)
		}
		if ev.Seqnum >= unplugSeqnum {
			unplug = append(unplug, ev)
		} else {
			plug = append(plug, ev)
		}
	}
}

// scaleRegistry has drivers for the scale scenario's disks and USB devices
// (the CD-ROMs and interfaces stay unmatched).
func scaleRegistry(tb testing.TB, opts ...driver.Option) *driver.Registry {
	r := driver.NewRegistry(append([]driver.Option{driver.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	for _, p := range []driver.Personality{
		{Name: "scale-disk", ProviderClass: scsibus.ClassDevice, Match: []driver.Match{driver.MatchValue(scsibus.PropType, uint64(0))},
			New: func() driver.Driver { return nopDriver{} }},
		{Name: "scale-usb", ProviderClass: usbbus.ClassDevice, Match: []driver.Match{driver.MatchValue(usbbus.PropVendorID, uint64(0x1234))},
			New: func() driver.Driver { return nopDriver{} }},
	} {
		if err := r.RegisterPersonality(p); err != nil {
			tb.Fatal(err)
		}
	}
	return r
}

// runScale hands the events to a bridge and returns how long the plug half
// and the unplug half took, each until the registry was quiet.
func runScale(tb testing.TB, r *driver.Registry, plug, unplug []hotplug.Event, heap *int64) (tPlug, tUnplug time.Duration) {
	tb.Helper()
	ctx := context.Background()
	br := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: "/nonexistent"})
	defer br.Close()
	var ms runtime.MemStats
	if heap != nil {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		*heap = -int64(ms.HeapAlloc)
	}
	t0 := time.Now()
	for _, ev := range plug {
		br.Handle(ev)
	}
	if err := br.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := r.WaitQuiet(ctx); err != nil {
		tb.Fatal(err)
	}
	t1 := time.Now()
	if heap != nil {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		*heap += int64(ms.HeapAlloc)
		t1 = time.Now()
	}
	for _, ev := range unplug {
		br.Handle(ev)
	}
	if err := br.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := r.WaitQuiet(ctx); err != nil {
		tb.Fatal(err)
	}
	st := br.Stats()
	if st.Published != st.Terminated || st.PublishErrors != 0 || st.UnknownRemoves != 0 {
		tb.Fatalf("bridge stats after unplugging everything: %+v", st)
	}
	return t1.Sub(t0), time.Since(t1)
}

// BenchmarkBridgeScale measures the per-device cost of plugging and of
// unplugging 1k, 10k and 100k devices (SCSI LUNs and USB devices mixed,
// the simulator's event sequences, a driver matched on the disks and the
// USB devices), each size in every iteration, and reports how the cost
// grows from 1k to 100k (the goal is ≤ 1.2×: a remove costs O(depth),
// not O(devices)). Event generation is outside the timings.
func BenchmarkBridgeScale(b *testing.B) {
	sizes := []int{1000, 10000, 100000}
	type evs struct{ plug, unplug []hotplug.Event }
	all := make([]evs, len(sizes))
	for i, n := range sizes {
		all[i].plug, all[i].unplug = scaleEvents(b, n)
	}
	var heap int64
	plug := make([][]float64, len(sizes))
	unplug := make([][]float64, len(sizes))
	for b.Loop() {
		for i, n := range sizes {
			// Small sizes are noisy: take the median of several runs.
			for range max(1, 10000/n) {
				r := scaleRegistry(b)
				var h *int64
				if i == len(sizes)-1 {
					h = &heap
				}
				p, u := runScale(b, r, all[i].plug, all[i].unplug, h)
				_ = r.Close(context.Background())
				plug[i] = append(plug[i], float64(p.Nanoseconds())/float64(n))
				unplug[i] = append(unplug[i], float64(u.Nanoseconds())/float64(n))
			}
		}
	}
	med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	for i, n := range sizes {
		b.ReportMetric(med(plug[i]), fmt.Sprintf("plug-ns/dev@%dk", n/1000))
		b.ReportMetric(med(unplug[i]), fmt.Sprintf("unplug-ns/dev@%dk", n/1000))
	}
	last := len(sizes) - 1
	// What the registry and the bridge hold per plugged device (traced, as
	// the daemon runs; the simulator's events are not counted).
	b.ReportMetric(float64(heap)/float64(sizes[last]), "heap-B/dev@100k")
	b.ReportMetric(med(plug[last])/med(plug[0]), "plug-growth-1k→100k")
	b.ReportMetric(med(unplug[last])/med(unplug[0]), "unplug-growth-1k→100k")
}

var scaleN = flag.Int("scale.n", 2000, "devices in TestScalePlugInspectUnplug (make stress runs 100000)")

// TestScalePlugInspectUnplug plugs scale.n devices (SCSI LUNs and USB
// devices mixed) through a bridge, checks the registry holds a nub for
// each and a driver on each disk and USB device, unplugs them all, and
// checks the lifecycle trace against the termination contract; TestMain's
// leak check then finds no object and no goroutine left.
func TestScalePlugInspectUnplug(t *testing.T) {
	n := *scaleN
	plug, unplug := scaleEvents(t, n)
	r := scaleRegistry(t)
	rec := lifecycletest.Record(t, r)
	ctx := context.Background()
	br := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: "/nonexistent"})
	for _, ev := range plug {
		br.Handle(ev)
	}
	require.NoError(t, br.Flush(ctx))
	require.NoError(t, r.WaitQuiet(ctx))

	// Inspect: every LUN and USB device has its nub, the disks and the
	// USB devices their driver.
	_, usb := scaleScenario(n)
	byClass := map[string]int{}
	drivers := map[string]int{}
	for _, s := range r.Services() {
		byClass[s.Class()]++
		if p := s.Personality(); p != nil {
			drivers[p.Name]++
		}
	}
	sticks := (usb + 3) / 4 * 2
	if usb%4 == 1 {
		sticks--
	}
	luns := n - usb
	require.Equal(t, luns+sticks, byClass[scsibus.ClassDevice], "SCSI nubs: %v", byClass)
	require.Equal(t, (luns+1)/2+sticks, drivers["scale-disk"], "disk drivers: %v", drivers)
	require.Equal(t, usb, drivers["scale-usb"], "USB drivers: %v", drivers)

	for _, ev := range unplug {
		br.Handle(ev)
	}
	require.NoError(t, br.Flush(ctx))
	require.NoError(t, r.WaitQuiet(ctx))
	st := br.Stats()
	require.Equal(t, st.Published, st.Terminated, "%+v", st)
	require.Zero(t, st.PublishErrors+st.UnknownRemoves+st.Dropped, "%+v", st)
	for _, s := range r.Services() {
		require.Equal(t, r.Root().ID(), s.ID(), "left in the registry: %s", s)
	}
	require.NoError(t, br.Close())
	require.NoError(t, r.Close(ctx))
	rec.Check(t)
}
