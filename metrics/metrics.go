package metrics

import (
	"path"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/userclient/server"
)

// UeventStats is a kernel uevent source that counts what it received and
// rejected: *hotplug.Netlink.
type UeventStats interface{ Stats() hotplug.Stats }

// BridgeStats is the hotplug bridge: *hotplug.Bridge.
type BridgeStats interface{ Stats() hotplug.BridgeStats }

// ClientStats is the user-client server: *server.Server (package userclient/server). Only its
// Stats method is used, so that where the server lives does not matter.
type ClientStats interface{ Stats() server.Stats }

// BundleStats is the hook for driver bundles — drivers run in processes of
// their own (package driver/host). Their supervisor reports, per driver,
// how often its process was started, crashed and was disabled (restarted
// too often); see the drvkit_bundle_* metrics.
type BundleStats interface{ BundleStats() []Bundle }

// Bundle is the process record of one driver bundle.
type Bundle struct {
	Driver   string // personality (driver) name: bounded by what is installed
	Starts   uint64
	Crashes  uint64
	Disables uint64
}

// Config says what a Collector reads. Only Registry is required; a nil
// source leaves its metrics out (a simulated bus has no netlink socket).
type Config struct {
	Registry *driver.Registry
	Uevents  UeventStats
	Bridge   BridgeStats
	Clients  ClientStats
	Bundles  BundleStats
	// Refcount includes the live traced objects and their outstanding
	// references per class (refcount is process-wide: leave it false when
	// several registries share a process and another collector reports it).
	Refcount bool
}

// Collector is a prometheus.Collector for one registry and its sources.
// Close it to stop following the registry.
type Collector struct {
	cfg    Config
	cancel func()

	steps  [stepCount]atomic.Uint64
	opens  atomic.Uint64
	deaths atomic.Uint64

	mu          sync.Mutex
	terms       map[termKey]uint64
	startFails  map[string]uint64
	uevents     map[string]time.Time // sysfs name → first add seen, until its nub is published
	nubOrigin   map[uint64]time.Time // published nub → its uevent (or publication), until a driver on it starts
	drvNub      map[uint64]uint64    // driver instance → the nub it attached to, until it starts
	terminating map[uint64]time.Time // terminated service → when, until freed
	latency     map[string]prometheus.Observer
	freeing     map[string]prometheus.Observer

	startLatency *prometheus.HistogramVec
	freeDuration *prometheus.HistogramVec
}

const stepCount = int(driver.StepFree) + 1

type termKey struct{ class, cause string }

// maxPendingUevents bounds the adds remembered while their nub is not
// published yet (devices the bridge does not publish never are).
const maxPendingUevents = 4096

var _ prometheus.Collector = (*Collector)(nil)

// New starts following cfg.Registry's lifecycle. Register the collector
// with a prometheus.Registerer, and Close it when done.
func New(cfg Config) *Collector {
	c := &Collector{
		cfg:         cfg,
		terms:       map[termKey]uint64{},
		startFails:  map[string]uint64{},
		uevents:     map[string]time.Time{},
		nubOrigin:   map[uint64]time.Time{},
		drvNub:      map[uint64]uint64{},
		terminating: map[uint64]time.Time{},
		latency:     map[string]prometheus.Observer{},
		freeing:     map[string]prometheus.Observer{},
		startLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "drvkit_hotplug_start_latency_seconds",
			Help: "Time from a device's add uevent (or its nub's publication when no uevent was seen) to the first successful Start of a driver on its nub.",
			// 100µs to ~26s: a sim bus starts drivers in well under a
			// millisecond, a slow real device in seconds.
			Buckets: prometheus.ExponentialBuckets(100e-6, 4, 10),
		}, []string{"class"}),
		freeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drvkit_termination_duration_seconds",
			Help:    "Time from a service's termination to its free (the last reference gone).",
			Buckets: prometheus.ExponentialBuckets(100e-6, 4, 10),
		}, []string{"class"}),
	}
	if cfg.Registry != nil {
		c.cancel = cfg.Registry.SubscribeLifecycle(c.lifecycle)
	}
	return c
}

// Close stops following the registry. The counters keep their values.
func (c *Collector) Close() {
	if c.cancel != nil {
		c.cancel()
	}
}

// UserClientOpened counts one open of a service by an application.
func (c *Collector) UserClientOpened() { c.opens.Add(1) }

// UserClientDied counts one user client cleaned up because its application
// went away (crashed, was killed, or dropped its connection) rather than
// closing it.
func (c *Collector) UserClientDied() { c.deaths.Add(1) }

// Uevent notes a uevent as the daemon received it: an add starts the clock
// of drvkit_hotplug_start_latency_seconds for the nub published for that
// device (matched by its sysfs name, e.g. "2-1", "2-1:1.0", "0:0:0:0"). It
// must be quick: the daemon calls it on its event loop.
func (c *Collector) Uevent(action hotplug.Action, devpath string, at time.Time) {
	name := path.Base(devpath)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch action {
	case hotplug.ActionAdd:
		if _, ok := c.uevents[name]; ok {
			return // the first add starts the clock
		}
		if len(c.uevents) >= maxPendingUevents {
			c.expireUevents(at)
		}
		c.uevents[name] = at
	case hotplug.ActionRemove:
		delete(c.uevents, name)
	}
}

// expireUevents forgets adds older than a minute (devices never
// published), or all of them if that is not enough; c.mu is held.
func (c *Collector) expireUevents(now time.Time) {
	for k, t := range c.uevents {
		if now.Sub(t) > time.Minute {
			delete(c.uevents, k)
		}
	}
	if len(c.uevents) >= maxPendingUevents {
		clear(c.uevents)
	}
}

// lifecycle runs synchronously on the registry's event delivery: map
// updates under a leaf lock, histograms observed after it.
func (c *Collector) lifecycle(ev driver.LifecycleEvent) {
	if int(ev.Step) < stepCount {
		c.steps[ev.Step].Add(1)
	}
	var hist prometheus.Observer
	var value float64
	c.mu.Lock()
	switch ev.Step {
	case driver.StepPublish:
		origin := ev.Time
		if t, ok := c.uevents[ev.Name]; ok {
			origin = t
			delete(c.uevents, ev.Name)
		}
		c.nubOrigin[ev.ServiceID] = origin
	case driver.StepAttach:
		if _, ok := c.nubOrigin[ev.ProviderID]; ok {
			c.drvNub[ev.ServiceID] = ev.ProviderID
		}
	case driver.StepStart:
		if ev.Err != "" {
			c.startFails[ev.Class]++
			delete(c.drvNub, ev.ServiceID)
			break
		}
		nub, ok := c.drvNub[ev.ServiceID]
		delete(c.drvNub, ev.ServiceID)
		if t, ok2 := c.nubOrigin[nub]; ok && ok2 {
			// The nub's first driver is its hotplug start; a driver
			// matched later (another category, a personality loaded
			// afterwards) is not.
			delete(c.nubOrigin, nub)
			hist, value = c.observer(c.latency, c.startLatency, ev.Class), ev.Time.Sub(t).Seconds()
		}
	case driver.StepTerminate:
		c.terms[termKey{ev.Class, terminationCause(ev)}]++
		c.terminating[ev.ServiceID] = ev.Time
		delete(c.nubOrigin, ev.ServiceID)
	case driver.StepFree:
		if t, ok := c.terminating[ev.ServiceID]; ok {
			delete(c.terminating, ev.ServiceID)
			hist, value = c.observer(c.freeing, c.freeDuration, ev.Class), ev.Time.Sub(t).Seconds()
		}
		delete(c.nubOrigin, ev.ServiceID)
		delete(c.drvNub, ev.ServiceID)
	}
	c.mu.Unlock()
	if hist != nil {
		hist.Observe(max(value, 0))
	}
}

// observer caches the histogram of a class; c.mu is held.
func (c *Collector) observer(cache map[string]prometheus.Observer, vec *prometheus.HistogramVec, class string) prometheus.Observer {
	o, ok := cache[class]
	if !ok {
		o = vec.WithLabelValues(class)
		cache[class] = o
	}
	return o
}

// terminationCause is the cause label of a terminate step: what started
// the termination (a service terminated because its provider went counts
// under its provider's cause — "provider" alone would say nothing), one of
// driver.Cause's few short names, so the label set stays bounded.
func terminationCause(ev driver.LifecycleEvent) string {
	if ev.RootCause != driver.CauseUnknown {
		return ev.RootCause.Text()
	}
	return ev.Cause.Text()
}

// Describe sends nothing: the collector is unchecked, because the classes
// it reports are known only at scrape time.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect reads every source now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectRegistry(ch)
	c.collectLifecycle(ch)
	c.collectHotplug(ch)
	c.collectClients(ch)
	if c.cfg.Refcount {
		collectRefcount(ch)
	}
	if c.cfg.Bundles != nil {
		collectBundles(ch, c.cfg.Bundles.BundleStats())
	}
	ch <- prometheus.MustNewConstMetric(descBuildInfo, prometheus.GaugeValue, 1, buildInfo()...)
}

var (
	descServices = prometheus.NewDesc("drvkit_services",
		"Services in the registry (not yet freed) by class and state: starting (a driver whose Start has not returned), active, terminating (terminated, not yet stopped), stopped (stopped and detached, waiting for its last reference).",
		[]string{"class", "state"}, nil)
	descSteps = prometheus.NewDesc("drvkit_lifecycle_steps_total",
		"Lifecycle steps taken, by step (publish, attach, probe, start, terminate, willTerminate, didTerminate, stop, detach, free).",
		[]string{"step"}, nil)
	descTerms = prometheus.NewDesc("drvkit_terminations_total",
		"Services terminated, by class and cause.", []string{"class", "cause"}, nil)
	descStartFails = prometheus.NewDesc("drvkit_driver_start_failures_total",
		"Driver Start calls that failed, by driver class.", []string{"class"}, nil)

	descUeventsReceived = prometheus.NewDesc("drvkit_uevents_received_total",
		"Datagrams read from the kernel uevent netlink socket.", nil, nil)
	descUeventsRejected = prometheus.NewDesc("drvkit_uevents_rejected_total",
		"Uevent datagrams dropped, by reason: not_kernel, no_credentials, not_root (spoofed: not sent by the kernel), malformed.",
		[]string{"reason"}, nil)
	descUeventOverflows = prometheus.NewDesc("drvkit_uevent_overflows_total",
		"Receive buffer overflows (ENOBUFS): the kernel dropped uevents, and sysfs was re-read.", nil, nil)
	descUeventsResynced = prometheus.NewDesc("drvkit_uevents_resynced_total",
		"Events synthesized by re-reading sysfs after overflows.", nil, nil)

	descBridgeEvents = prometheus.NewDesc("drvkit_hotplug_events_total",
		"Device events handled by the hotplug bridge.", nil, nil)
	descBridgeNubs = prometheus.NewDesc("drvkit_hotplug_nubs_total",
		"Nubs by what the bridge did: published, terminated (device left), dropped (left before its turn), replaced (another device at the same path), publish_error.",
		[]string{"action"}, nil)
	descBridgeIgnored = prometheus.NewDesc("drvkit_hotplug_events_ignored_total",
		"Device events of devices the bridge does not publish.", nil, nil)

	descConns = prometheus.NewDesc("drvkit_userclient_connections",
		"Application connections being served.", nil, nil)
	descSessions = prometheus.NewDesc("drvkit_userclient_sessions",
		"Services held open by applications.", nil, nil)
	descRefused = prometheus.NewDesc("drvkit_userclient_connections_refused_total",
		"Connections refused at connect by a limit (per user, in all, before the handshake).", nil, nil)
	descTimeouts = prometheus.NewDesc("drvkit_userclient_timeouts_total",
		"Connections ended by the frame or the idle timeout.", nil, nil)
	descCoalesced = prometheus.NewDesc("drvkit_userclient_notifications_coalesced_total",
		"ServiceWasClosed notifications merged into one already queued for the same handle.", nil, nil)
	descFanoutWrites = prometheus.NewDesc("drvkit_userclient_fanout_writes_total",
		"Notifications of fan-outs (a driver's message to its clients) by how they were written: io_uring (many per system call) or write (one each: io_uring off or unavailable, a lone client, every ring busy).",
		[]string{"path"}, nil)
	descOpens = prometheus.NewDesc("drvkit_userclient_opens_total",
		"Services opened by applications.", nil, nil)
	descDeaths = prometheus.NewDesc("drvkit_userclient_deaths_total",
		"User clients cleaned up because their application went away without closing them.", nil, nil)

	descLiveObjects = prometheus.NewDesc("drvkit_refcount_live_objects",
		"Live traced reference-counted objects, by class.", []string{"class"}, nil)
	descReferences = prometheus.NewDesc("drvkit_refcount_references",
		"Outstanding references on live traced objects, by class.", []string{"class"}, nil)

	descBundleStarts = prometheus.NewDesc("drvkit_bundle_process_starts_total",
		"Driver bundle processes started, by driver.", []string{"driver"}, nil)
	descBundleCrashes = prometheus.NewDesc("drvkit_bundle_process_crashes_total",
		"Driver bundle processes that died unexpectedly, by driver.", []string{"driver"}, nil)
	descBundleDisables = prometheus.NewDesc("drvkit_bundle_disables_total",
		"Driver bundles disabled after crashing too often, by driver.", []string{"driver"}, nil)

	descBuildInfo = prometheus.NewDesc("drvkit_build_info",
		"Always 1; the labels say which drvkit build runs.", []string{"version", "revision", "goversion"}, nil)
)

// States of drvkit_services.
const (
	stateStarting    = "starting"
	stateActive      = "active"
	stateTerminating = "terminating"
	stateStopped     = "stopped"
)

func serviceState(st driver.State) string {
	switch {
	case st.Active && !st.Started:
		return stateStarting
	case st.Active:
		return stateActive
	case !st.Stopped:
		return stateTerminating
	}
	return stateStopped
}

type classState struct{ class, state string }

func (c *Collector) collectRegistry(ch chan<- prometheus.Metric) {
	if c.cfg.Registry == nil {
		return
	}
	counts := map[classState]int{}
	for _, s := range c.cfg.Registry.Services() {
		counts[classState{s.Class(), serviceState(s.State())}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descServices, prometheus.GaugeValue, float64(n), k.class, k.state)
	}
}

func (c *Collector) collectLifecycle(ch chan<- prometheus.Metric) {
	for s := driver.StepPublish; int(s) < stepCount; s++ {
		ch <- prometheus.MustNewConstMetric(descSteps, prometheus.CounterValue, float64(c.steps[s].Load()), s.String())
	}
	c.mu.Lock()
	for k, n := range c.terms {
		ch <- prometheus.MustNewConstMetric(descTerms, prometheus.CounterValue, float64(n), k.class, k.cause)
	}
	for class, n := range c.startFails {
		ch <- prometheus.MustNewConstMetric(descStartFails, prometheus.CounterValue, float64(n), class)
	}
	c.mu.Unlock()
	c.startLatency.Collect(ch)
	c.freeDuration.Collect(ch)
}

func (c *Collector) collectHotplug(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if c.cfg.Uevents != nil {
		st := c.cfg.Uevents.Stats()
		counter(descUeventsReceived, st.Received)
		counter(descUeventsRejected, st.NotKernel, "not_kernel")
		counter(descUeventsRejected, st.NoCreds, "no_credentials")
		counter(descUeventsRejected, st.NotRoot, "not_root")
		counter(descUeventsRejected, st.Malformed, "malformed")
		counter(descUeventOverflows, st.Overflows)
		counter(descUeventsResynced, st.Resynced)
	}
	if c.cfg.Bridge != nil {
		st := c.cfg.Bridge.Stats()
		counter(descBridgeEvents, st.Events)
		counter(descBridgeNubs, st.Published, "published")
		counter(descBridgeNubs, st.Terminated, "terminated")
		counter(descBridgeNubs, st.Dropped, "dropped")
		counter(descBridgeNubs, st.Replaced, "replaced")
		counter(descBridgeNubs, st.PublishErrors, "publish_error")
		counter(descBridgeIgnored, st.Ignored)
	}
}

func (c *Collector) collectClients(ch chan<- prometheus.Metric) {
	if c.cfg.Clients != nil {
		st := c.cfg.Clients.Stats()
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(st.Conns))
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(st.Sessions))
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(st.Refused))
		ch <- prometheus.MustNewConstMetric(descTimeouts, prometheus.CounterValue, float64(st.Timeouts))
		ch <- prometheus.MustNewConstMetric(descCoalesced, prometheus.CounterValue, float64(st.Coalesced))
		ch <- prometheus.MustNewConstMetric(descFanoutWrites, prometheus.CounterValue, float64(st.FanoutRing), "io_uring")
		ch <- prometheus.MustNewConstMetric(descFanoutWrites, prometheus.CounterValue, float64(st.FanoutWrite), "write")
	}
	ch <- prometheus.MustNewConstMetric(descOpens, prometheus.CounterValue, float64(c.opens.Load()))
	ch <- prometheus.MustNewConstMetric(descDeaths, prometheus.CounterValue, float64(c.deaths.Load()))
}

func collectRefcount(ch chan<- prometheus.Metric) {
	type counts struct{ objects, refs int }
	by := map[string]*counts{}
	for _, o := range refcount.LiveObjects() {
		n := by[o.Class()]
		if n == nil {
			n = &counts{}
			by[o.Class()] = n
		}
		n.objects++
		n.refs += o.RetainCount()
	}
	for class, n := range by {
		ch <- prometheus.MustNewConstMetric(descLiveObjects, prometheus.GaugeValue, float64(n.objects), class)
		ch <- prometheus.MustNewConstMetric(descReferences, prometheus.GaugeValue, float64(n.refs), class)
	}
}

func collectBundles(ch chan<- prometheus.Metric, bundles []Bundle) {
	seen := map[string]bool{}
	for _, b := range bundles {
		if seen[b.Driver] { // a duplicate series would fail the scrape
			continue
		}
		seen[b.Driver] = true
		ch <- prometheus.MustNewConstMetric(descBundleStarts, prometheus.CounterValue, float64(b.Starts), b.Driver)
		ch <- prometheus.MustNewConstMetric(descBundleCrashes, prometheus.CounterValue, float64(b.Crashes), b.Driver)
		ch <- prometheus.MustNewConstMetric(descBundleDisables, prometheus.CounterValue, float64(b.Disables), b.Driver)
	}
}

var buildInfo = sync.OnceValue(func() []string {
	version, revision, goversion := "(devel)", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goversion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	return []string{version, revision, goversion}
})
