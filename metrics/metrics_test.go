package metrics_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/metrics"
	"github.com/drvkit/drvkit/metrics/metricstest"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient/server"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

type nopDriver struct{}

func (nopDriver) Start(context.Context, *driver.Service) error { return nil }
func (nopDriver) Stop(*driver.Service)                         {}

type failDriver struct{}

func (failDriver) Start(context.Context, *driver.Service) error { return fmt.Errorf("no medium") }
func (failDriver) Stop(*driver.Service)                         {}

// rig is a registry with a driver for USB devices of vendor 0x1234 (and
// one that fails for vendor 0xdead), fed through a hotplug bridge.
type rig struct {
	r    *driver.Registry
	rec  *lifecycletest.Recorder
	br   *hotplug.Bridge
	c    *metrics.Collector
	prom *prometheus.Registry
}

func newRig(t testing.TB, cfg metrics.Config) *rig {
	t.Helper()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	rg := &rig{r: r, rec: lifecycletest.Record(t, r)}
	for _, p := range []driver.Personality{
		{Name: "disk", Class: "TestDisk", ProviderClass: usbbus.ClassDevice,
			Match: []driver.Match{driver.MatchValue(usbbus.PropVendorID, 0x1234)}, New: func() driver.Driver { return nopDriver{} }},
		{Name: "broken", Class: "BrokenDisk", ProviderClass: usbbus.ClassDevice,
			Match: []driver.Match{driver.MatchValue(usbbus.PropVendorID, 0xdead)}, New: func() driver.Driver { return failDriver{} }},
	} {
		require.NoError(t, r.RegisterPersonality(p))
	}
	rg.br = hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	cfg.Registry, cfg.Bridge = r, rg.br
	rg.c = metrics.New(cfg)
	rg.prom = prometheus.NewPedanticRegistry()
	require.NoError(t, rg.prom.Register(rg.c))
	t.Cleanup(func() {
		require.NoError(t, rg.br.Close())
		rg.c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
		rg.rec.Check(t)
	})
	return rg
}

func usbEvent(t testing.TB, action hotplug.Action, port string, vendor int) hotplug.Event {
	t.Helper()
	ev, err := hotplug.NewEvent(action, "/devices/pci0000:00/0000:00:02.0/usb2/"+port, "usb", 0,
		"DEVTYPE=usb_device", fmt.Sprintf("PRODUCT=%x/5678/100", vendor), "TYPE=0/0/0", "BUSNUM=002", "DEVNUM=002")
	require.NoError(t, err)
	return ev
}

// plug and unplug hand the bridge a device's add (remove) as the daemon
// does: the collector hears of the uevent first.
func (rg *rig) plug(t testing.TB, port string, vendor int) {
	ev := usbEvent(t, hotplug.ActionAdd, port, vendor)
	rg.c.Uevent(ev.Action, ev.DevPath, time.Now())
	rg.br.Handle(ev)
	require.NoError(t, rg.br.Flush(context.Background()))
}

func (rg *rig) unplug(t testing.TB, port string) {
	ev := usbEvent(t, hotplug.ActionRemove, port, 0x1234)
	rg.c.Uevent(ev.Action, ev.DevPath, time.Now())
	rg.br.Handle(ev)
	require.NoError(t, rg.br.Flush(context.Background()))
	require.NoError(t, rg.r.WaitQuiet(context.Background()))
}

// scrape writes the exposition as /metrics would and parses it back with
// the Prometheus text parser.
func scrape(t testing.TB, g prometheus.Gatherer) metricstest.Families {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		require.NoError(t, enc.Encode(mf))
	}
	parsed, err := metricstest.Parse(&b)
	require.NoError(t, err, "exposition:\n%s", b.String())
	return parsed
}

// series lists every time series as "name{labels}", for cardinality.
func series(fams map[string]*dto.MetricFamily) []string {
	var out []string
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			out = append(out, name+"{"+strings.Join(ls, ",")+"}")
		}
	}
	sort.Strings(out)
	return out
}

type fakeUevents struct{ st hotplug.Stats }

func (f *fakeUevents) Stats() hotplug.Stats { return f.st }

type fakeClients struct{ st server.Stats }

func (f *fakeClients) Stats() server.Stats { return f.st }

type fakeBundles []metrics.Bundle

func (f fakeBundles) BundleStats() []metrics.Bundle { return f }

func TestCollectorLifecycle(t *testing.T) {
	leaktest.Check(t)
	ue := &fakeUevents{st: hotplug.Stats{Received: 9, NotKernel: 2, NoCreds: 1, NotRoot: 3, Malformed: 4, Overflows: 5, Resynced: 6}}
	cl := &fakeClients{st: server.Stats{Conns: 2, Sessions: 3, Refused: 7, Timeouts: 8, Coalesced: 9, FanoutRing: 10, FanoutWrite: 11}}
	rg := newRig(t, metrics.Config{Uevents: ue, Clients: cl, Refcount: true,
		Bundles: fakeBundles{{Driver: "hidbundle", Starts: 3, Crashes: 2, Disables: 1}}})
	rg.plug(t, "2-1", 0x1234)
	rg.plug(t, "2-2", 0xdead)
	rg.c.UserClientOpened()
	rg.c.UserClientOpened()
	rg.c.UserClientDied()
	f := scrape(t, rg.prom)
	require.Equal(t, 2.0, f.Value("drvkit_services", "class=USBDevice", "state=active"))
	require.Equal(t, 1.0, f.Value("drvkit_services", "class=TestDisk", "state=active"))
	require.Equal(t, 1.0, f.Value("drvkit_services", "class=Root", "state=active"))
	require.Equal(t, 2.0, f.Value("drvkit_lifecycle_steps_total", "step=publish"))
	require.Equal(t, 1.0, f.Value("drvkit_driver_start_failures_total", "class=BrokenDisk"))
	require.Equal(t, 1.0, f.Value("drvkit_hotplug_start_latency_seconds", "class=TestDisk"), "one driver started on a plugged device")
	require.Zero(t, f.Value("drvkit_hotplug_start_latency_seconds", "class=BrokenDisk"), "a failed Start is not a start")
	require.Equal(t, 2.0, f.Value("drvkit_hotplug_nubs_total", "action=published"))
	require.Equal(t, 2.0, f.Value("drvkit_hotplug_events_total"))
	require.Equal(t, 9.0, f.Value("drvkit_uevents_received_total"))
	require.Equal(t, 2.0, f.Value("drvkit_uevents_rejected_total", "reason=not_kernel"))
	require.Equal(t, 1.0, f.Value("drvkit_uevents_rejected_total", "reason=no_credentials"))
	require.Equal(t, 3.0, f.Value("drvkit_uevents_rejected_total", "reason=not_root"))
	require.Equal(t, 4.0, f.Value("drvkit_uevents_rejected_total", "reason=malformed"))
	require.Equal(t, 5.0, f.Value("drvkit_uevent_overflows_total"))
	require.Equal(t, 6.0, f.Value("drvkit_uevents_resynced_total"))
	require.Equal(t, 2.0, f.Value("drvkit_userclient_connections"))
	require.Equal(t, 3.0, f.Value("drvkit_userclient_sessions"))
	require.Equal(t, 7.0, f.Value("drvkit_userclient_connections_refused_total"))
	require.Equal(t, 8.0, f.Value("drvkit_userclient_timeouts_total"))
	require.Equal(t, 9.0, f.Value("drvkit_userclient_notifications_coalesced_total"))
	require.Equal(t, 10.0, f.Value("drvkit_userclient_fanout_writes_total", "path=io_uring"))
	require.Equal(t, 11.0, f.Value("drvkit_userclient_fanout_writes_total", "path=write"))
	require.Equal(t, 2.0, f.Value("drvkit_userclient_opens_total"))
	require.Equal(t, 1.0, f.Value("drvkit_userclient_deaths_total"))
	require.Equal(t, 2.0, f.Value("drvkit_refcount_live_objects", "class=USBDevice"))
	require.GreaterOrEqual(t, f.Value("drvkit_refcount_references", "class=USBDevice"), 4.0, "registry, bridge and provider references")
	require.Equal(t, 3.0, f.Value("drvkit_bundle_process_starts_total", "driver=hidbundle"))
	require.Equal(t, 2.0, f.Value("drvkit_bundle_process_crashes_total", "driver=hidbundle"))
	require.Equal(t, 1.0, f.Value("drvkit_bundle_disables_total", "driver=hidbundle"))
	require.Equal(t, 1.0, f.Value("drvkit_build_info"))

	rg.unplug(t, "2-1")
	rg.unplug(t, "2-2")
	f = scrape(t, rg.prom)
	require.Zero(t, f.Value("drvkit_services", "class=USBDevice"))
	require.Equal(t, 2.0, f.Value("drvkit_terminations_total", "class=USBDevice"), "both devices left (one cause)")
	require.Equal(t, 1.0, f.Value("drvkit_terminations_total", "class=TestDisk"))
	require.Equal(t, 2.0, f.Value("drvkit_termination_duration_seconds", "class=USBDevice"))
	require.Equal(t, 1.0, f.Value("drvkit_termination_duration_seconds", "class=TestDisk"))
	require.Equal(t, f.Value("drvkit_lifecycle_steps_total", "step=terminate"), f.Value("drvkit_lifecycle_steps_total", "step=free"))
	require.Equal(t, 2.0, f.Value("drvkit_hotplug_nubs_total", "action=terminated"))
	require.Zero(t, f.Value("drvkit_refcount_live_objects", "class=USBDevice"))

	// The exposition is lint-clean: names, units, help, types.
	problems, err := testutil.GatherAndLint(rg.prom)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestCardinalityBounded plugs and unplugs 10,000 devices, each at a new
// port (and so with a new name, path and service IDs): the set of series
// after them is the set after the first few, and nothing the collector
// keeps per service or per uevent is left over.
func TestCardinalityBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 cycles")
	}
	leaktest.Check(t)
	rg := newRig(t, metrics.Config{Refcount: true})
	cycle := func(i int) {
		port := fmt.Sprintf("%d-%d", 1+i%7, 1+i)
		vendor := 0x1234
		if i%10 == 9 {
			vendor = 0xdead // a failing driver now and then
		}
		rg.plug(t, port, vendor)
		rg.unplug(t, port)
		// A uevent for a device the bridge never publishes.
		rg.c.Uevent(hotplug.ActionAdd, fmt.Sprintf("/devices/virtual/misc/x%d", i), time.Now())
	}
	for i := range 20 {
		cycle(i)
	}
	early := series(scrape(t, rg.prom))
	const n = 10000
	for i := 20; i < n; i++ {
		cycle(i)
	}
	f := scrape(t, rg.prom)
	require.Equal(t, early, series(f), "series after 20 cycles and after %d", n)
	t.Logf("%d series after %d plug/unplug cycles", len(early), n)
	require.Equal(t, float64(n), f.Value("drvkit_lifecycle_steps_total", "step=publish"))
	require.Equal(t, float64(n-n/10), f.Value("drvkit_hotplug_start_latency_seconds", "class=TestDisk"))
	require.Equal(t, float64(n/10), f.Value("drvkit_driver_start_failures_total", "class=BrokenDisk"))
	require.Equal(t, float64(n), f.Value("drvkit_termination_duration_seconds", "class=USBDevice"))
	pending := metrics.Pending(rg.c)
	require.Zero(t, pending.Services, "per-service state left after every service was freed")
	require.LessOrEqual(t, pending.Uevents, metrics.MaxPendingUevents, "uevents never published are bounded")
}

func TestUeventBeforePublicationIsTheOrigin(t *testing.T) {
	leaktest.Check(t)
	rg := newRig(t, metrics.Config{})
	ev := usbEvent(t, hotplug.ActionAdd, "3-1", 0x1234)
	// The uevent arrived 2s before the bridge got to it: the latency
	// counts from the uevent, not from the publication.
	rg.c.Uevent(ev.Action, ev.DevPath, time.Now().Add(-2*time.Second))
	rg.br.Handle(ev)
	require.NoError(t, rg.br.Flush(context.Background()))
	f := scrape(t, rg.prom)
	mf := f["drvkit_hotplug_start_latency_seconds"]
	require.NotNil(t, mf)
	h := mf.GetMetric()[0].GetHistogram()
	require.EqualValues(t, 1, h.GetSampleCount())
	require.InDelta(t, 2.0, h.GetSampleSum(), 0.5)
	rg.unplug(t, "3-1")
}

func TestBundlesDuplicateDriverDoesNotBreakScrape(t *testing.T) {
	leaktest.Check(t)
	rg := newRig(t, metrics.Config{Bundles: fakeBundles{{Driver: "a", Starts: 1}, {Driver: "a", Starts: 5}}})
	f := scrape(t, rg.prom)
	require.Equal(t, 1.0, f.Value("drvkit_bundle_process_starts_total", "driver=a"))
}
