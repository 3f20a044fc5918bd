package driver_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/internal/cputime"
	"github.com/drvkit/drvkit/refcount"
)

type benchDriver struct{}

func (benchDriver) Start(context.Context, *driver.Service) error { return nil }
func (benchDriver) Stop(*driver.Service)                         {}

// benchClient stands for a user client forwarding notifications.
type benchClient struct{ n atomic.Int64 }

func (c *benchClient) Message(*driver.Service, driver.Message) error { c.n.Add(1); return nil }

// buildTree publishes a bus nub with devices × (nub + 1 driver + 4 user
// clients) under it and returns the bus and the number of services.
func buildTree(b *testing.B, r *driver.Registry, devices int) (*driver.Service, int) {
	bus := r.NewNub("Bus", "bus", driver.Properties{})
	if err := r.Publish(nil, bus); err != nil {
		b.Fatal(err)
	}
	h := &benchClient{}
	for i := 0; i < devices; i++ {
		dev := r.NewNub("Device", "", driver.NewProperties(map[string]any{"kind": "disk"}))
		if err := r.Publish(bus, dev); err != nil {
			b.Fatal(err)
		}
		d := dev.Clients()[0]
		for j := 0; j < 4; j++ {
			if _, err := r.AttachClient(d, "UserClient", "", h); err != nil {
				b.Fatal(err)
			}
		}
	}
	return bus, 1 + devices*6
}

// untraced turns reference tracing (on for the tests) off for a benchmark.
func untraced(b *testing.B) {
	refcount.TraceOff()
	b.Cleanup(refcount.TraceAll)
}

func benchRegistry(b *testing.B) *driver.Registry {
	untraced(b)
	r := driver.NewRegistry(driver.WithLogger(quietLogger()))
	if err := r.RegisterPersonality(driver.Personality{Name: "disk", ProviderClass: "Device",
		Match: []driver.Match{driver.MatchValue("kind", "disk")},
		New:   func() driver.Driver { return benchDriver{} }}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { // or TestMain's leak check fails the run
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return r
}

// evictBuf is larger than the last-level cache of any machine we run on.
var evictBuf []byte

// evictCaches streams through evictBuf, so that what was built before it
// is out of the CPU caches, as a tree is when its device is unplugged
// long after it was plugged in.
func evictCaches() {
	if evictBuf == nil {
		evictBuf = make([]byte, 128<<20)
	}
	for i := 0; i < len(evictBuf); i += 64 {
		evictBuf[i]++
	}
}

// cost is what one terminate took per service: wall time, and the CPU
// time of the whole process.
type cost struct{ wall, cpu float64 }

func (c *cost) add(d cost) { c.wall += d.wall; c.cpu += d.cpu }

func (c cost) div(n float64) cost { return cost{c.wall / n, c.cpu / n} }

// timeTerminate terminates bus and waits until its count services are
// freed.
func timeTerminate(b *testing.B, bus *driver.Service, count int) cost {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c0, _ := cputime.Process()
	t0 := time.Now()
	if err := bus.TerminateSync(ctx); err != nil {
		b.Fatal(err)
	}
	wall := time.Since(t0)
	c1, _ := cputime.Process()
	return cost{float64(wall.Nanoseconds()) / float64(count), float64((c1 - c0).Nanoseconds()) / float64(count)}
}

// terminateTree builds a tree of about n services and times its
// terminate; cold evicts the tree from the CPU caches first.
func terminateTree(b *testing.B, r *driver.Registry, n int, cold bool) cost {
	bus, count := buildTree(b, r, n/6)
	runtime.GC()
	if cold {
		evictCaches()
	}
	return timeTerminate(b, bus, count)
}

func gcCycles() uint32 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.NumGC
}

// BenchmarkTerminateTree terminates trees of 1k, 10k and 100k services
// (devices × (nub + driver + 4 user clients)) until every one is freed.
//
// The 100k case also reports its per-service cost against 1k baselines
// measured in the same run, interleaved so that a load change on the
// machine hits both sides:
//
//   - growth-vs-1k: against a warm 1k tree (terminated right after it was
//     built, so it is still in the L2 cache), 20 repeats. A 100k tree
//     (~50 MB) cannot be in any cache, so this ratio mostly measures the
//     memory hierarchy: cache misses a large registry pays and a small one
//     does not.
//   - growth-cold: a 100k tree against a 1k tree, both evicted from the
//     CPU caches before the timed terminate (how a tree is when a device
//     is unplugged long after it was plugged in). Both pay a miss on their
//     first touch of each service, so this ratio shows what grows with the
//     size beyond that: super-linear work, map and slice growth, heap
//     effects.
//
// gc/op counts the garbage collections during the timed terminates: the
// tree is built and collected before the timer starts, so the timed part
// is only free of GC work if it is 0.
//
// Where the process CPU time is available, cpu-ns/service and the cpu-
// ratios give the same figures in CPU time of the whole process: on a
// machine shared with other work, wall time also counts the time spent
// waiting for a CPU, which hits the short 1k runs (several goroutine
// hand-offs each) much harder than the long 100k ones and makes the wall
// ratios swing both ways.
func BenchmarkTerminateTree(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			r := benchRegistry(b)
			defer r.Close(context.Background())
			b.ReportAllocs()
			b.StopTimer()
			_, haveCPU := cputime.Process()
			var total cost
			var gcs uint32
			for i := 0; i < b.N; i++ {
				bus, count := buildTree(b, r, n/6)
				// Every size starts from a finished GC cycle, so that a
				// collection owed by the build is not billed to the terminate.
				runtime.GC()
				gc0 := gcCycles()
				b.StartTimer()
				total.add(timeTerminate(b, bus, count))
				b.StopTimer()
				gcs += gcCycles() - gc0
			}
			perSvc := total.div(float64(b.N))
			b.ReportMetric(perSvc.wall, "ns/service")
			b.ReportMetric(float64(gcs)/float64(b.N), "gc/op")
			if haveCPU {
				b.ReportMetric(perSvc.cpu, "cpu-ns/service")
			}
			if n == 100000 {
				var warm1k, cold1k, cold100k cost
				const rounds, reps = 3, 7 // 21 1k repeats of each kind
				for range rounds {
					cold100k.add(terminateTree(b, r, n, true))
					for range reps {
						warm1k.add(terminateTree(b, r, 1000, false))
						cold1k.add(terminateTree(b, r, 1000, true))
					}
				}
				warm1k = warm1k.div(rounds * reps)
				cold1k = cold1k.div(rounds * reps)
				cold100k = cold100k.div(rounds)
				b.ReportMetric(warm1k.wall, "ns/service@1k")
				b.ReportMetric(perSvc.wall/warm1k.wall, "growth-vs-1k")
				b.ReportMetric(cold1k.wall, "ns/service@1k-cold")
				b.ReportMetric(cold100k.wall, "ns/service-cold")
				b.ReportMetric(cold100k.wall/cold1k.wall, "growth-cold")
				if haveCPU {
					b.ReportMetric(perSvc.cpu/warm1k.cpu, "cpu-growth-vs-1k")
					b.ReportMetric(cold100k.cpu/cold1k.cpu, "cpu-growth-cold")
				}
			}
		})
	}
}

// BenchmarkPublishMatchStart measures publish → match → probe-free Start
// for nubs with two candidate personalities, one of which does not match.
func BenchmarkPublishMatchStart(b *testing.B) {
	r := benchRegistry(b)
	defer r.Close(context.Background())
	_ = r.RegisterPersonality(driver.Personality{Name: "tape", ProviderClass: "Device",
		Match: []driver.Match{driver.MatchValue("kind", "tape")}, New: func() driver.Driver { return benchDriver{} }})
	bus := r.NewNub("Bus", "bus", driver.Properties{})
	_ = r.Publish(nil, bus)
	props := driver.NewProperties(map[string]any{"kind": "disk"})
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		dev := r.NewNub("Device", "", props)
		if err := r.Publish(bus, dev); err != nil {
			b.Fatal(err)
		}
	}
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "services/s")
	_ = bus.TerminateSync(context.Background())
}

type sample struct{ A, B, C, D uint64 }

// BenchmarkMonitoredLoad compares Monitored.Load with a read under
// sync.RWMutex, both with one concurrent writer, in the same run.
func BenchmarkMonitoredLoad(b *testing.B) {
	m := driver.NewMonitored(nil, sample{})
	var mu sync.RWMutex
	var guarded sample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := sample{i, i, i, i}
			m.Store(v)
			mu.Lock()
			guarded = v
			mu.Unlock()
		}
	}()
	var sink uint64
	untraced(b)
	// Baseline first, same b.N.
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		mu.RLock()
		v := guarded
		mu.RUnlock()
		sink += v.A
	}
	rw := float64(time.Since(t0).Nanoseconds()) / float64(b.N)
	// Allocation counts are process-wide and the writer allocates a
	// snapshot per Store, so Load's own allocations are measured apart.
	loadAllocs := testing.AllocsPerRun(1000, func() { sink += m.Load().A })
	b.ResetTimer()
	t0 = time.Now()
	for i := 0; i < b.N; i++ {
		sink += m.Load().A
	}
	ld := float64(time.Since(t0).Nanoseconds()) / float64(b.N)
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(rw, "rwmutex-ns/op")
	b.ReportMetric(rw/ld, "speedup-vs-rwmutex")
	b.ReportMetric(loadAllocs, "load-allocs/op")
	_ = sink
}

// countingClient is a user client whose handler counts a fan-out down.
type countingClient struct {
	wg  *sync.WaitGroup
	got int
}

func (c *countingClient) Message(*driver.Service, driver.Message) error {
	c.got++
	c.wg.Done()
	return nil
}

// inlineCountingClient promises a Message that never blocks.
type inlineCountingClient struct{ countingClient }

func (*inlineCountingClient) MessageInline() {}

// BenchmarkMessageClients: a driver messages its 1,000 clients; one op
// lasts until every client's handler has run. Its floor is the same
// handlers called one after the other by one goroutine, timed in chunks
// interleaved with the fan-outs: x-direct is what the registry's
// asynchronous (pool) or inline (InlineMessageHandler), in-order,
// one-at-a-time delivery costs over a plain call.
func BenchmarkMessageClients(b *testing.B) {
	for _, inline := range []bool{false, true} {
		b.Run(map[bool]string{false: "pool", true: "inline"}[inline], func(b *testing.B) {
			messageClients(b, inline)
		})
	}
}

func messageClients(b *testing.B, inline bool) {
	const clients = 1000
	r := benchRegistry(b)
	dev := r.NewNub("Device", "", driver.NewProperties(map[string]any{"kind": "disk"}))
	if err := r.Publish(nil, dev); err != nil {
		b.Fatal(err)
	}
	d := dev.Clients()[0]
	var wg sync.WaitGroup
	hs := make([]driver.MessageHandler, clients)
	for i := range hs {
		if inline {
			hs[i] = &inlineCountingClient{countingClient{wg: &wg}}
		} else {
			hs[i] = &countingClient{wg: &wg}
		}
		if _, err := r.AttachClient(d, "UserClient", "", hs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = dev.TerminateSync(context.Background()) })
	m := driver.Message{Type: driver.MessageDriverDefined}
	var fanT, floorT time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		wg.Add(clients)
		for _, h := range hs {
			_ = h.Message(nil, m)
		}
		wg.Wait()
		t1 := time.Now()
		wg.Add(clients)
		d.MessageClients(driver.MessageDriverDefined, nil)
		wg.Wait()
		fanT += time.Since(t1)
		floorT += t1.Sub(t0)
	}
	b.StopTimer()
	b.ReportMetric(float64(fanT.Nanoseconds())/float64(b.N*clients), "ns/client")
	b.ReportMetric(float64(floorT.Nanoseconds())/float64(b.N*clients), "direct-ns/client")
	b.ReportMetric(float64(fanT)/float64(floorT), "x-direct")
}
