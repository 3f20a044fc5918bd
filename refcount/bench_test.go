package refcount

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// Each benchmark that has a target reports its ratio to a baseline timed in
// the same benchmark run, on the same b.N, so that machine noise cancels.

var sinkCount atomic.Int32

//go:noinline
func atomicPair(n *atomic.Int32) {
	n.Add(1)
	n.Add(-1)
}

func BenchmarkAtomicBaseline(b *testing.B) {
	b.ReportAllocs()
	var n atomic.Int32
	for i := 0; i < b.N; i++ {
		n.Add(1)
		n.Add(-1)
	}
	sinkCount.Store(n.Load())
}

func BenchmarkRetainRelease(b *testing.B) {
	var o Object
	o.Init("BenchUntraced", nil)
	var n atomic.Int32
	// Interleaved by hand: a closure call would cost as much as the
	// operations measured.
	var tb, ts time.Duration
	for done := 0; done < b.N; done += 4096 {
		k := min(4096, b.N-done)
		start := time.Now()
		for i := 0; i < k; i++ {
			n.Add(1)
			n.Add(-1)
		}
		mid := time.Now()
		for i := 0; i < k; i++ {
			o.Retain()
			o.Release()
		}
		ts += time.Since(mid)
		tb += mid.Sub(start)
	}
	ratio := float64(ts) / float64(max(tb, 1))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o.Retain()
		o.Release()
	}
	b.StopTimer()
	b.ReportMetric(ratio, "x-atomic")
	sinkCount.Store(n.Load())
}

// interleavedRatio times subject against base over n calls each, in
// alternating chunks, so that a change in machine load (2 vCPUs shared
// with other work) hits both alike; it returns subject/base.
func interleavedRatio(n, chunk int, base, subject func()) float64 {
	var tb, ts time.Duration
	for done := 0; done < n; done += chunk {
		k := min(chunk, n-done)
		start := time.Now()
		for i := 0; i < k; i++ {
			base()
		}
		mid := time.Now()
		for i := 0; i < k; i++ {
			subject()
		}
		ts += time.Since(mid)
		tb += mid.Sub(start)
	}
	if tb == 0 {
		return 0
	}
	return float64(ts) / float64(tb)
}

// callersPair captures the two stacks a traced retain/release pair
// captures, at the same depth (benchmark → Retain → retainSlow →
// tracked.retain → internStack → runtime.Callers) and, like the pair, from
// two distinct call paths so that the runtime's unwinding caches see the
// same variety of PCs.
//
//go:noinline
func callersPair(pcs *[maxDepth]uintptr) int {
	return callersRetain1(pcs) + callersRelease1(pcs)
}

//go:noinline
func callersRetain1(pcs *[maxDepth]uintptr) int { return callersRetain2(pcs) }

//go:noinline
func callersRetain2(pcs *[maxDepth]uintptr) int { return callersRetain3(pcs) }

//go:noinline
func callersRetain3(pcs *[maxDepth]uintptr) int { return callersRetain4(pcs) }

//go:noinline
func callersRetain4(pcs *[maxDepth]uintptr) int { return runtime.Callers(5, pcs[:]) }

//go:noinline
func callersRelease1(pcs *[maxDepth]uintptr) int { return callersRelease2(pcs) }

//go:noinline
func callersRelease2(pcs *[maxDepth]uintptr) int { return callersRelease3(pcs) }

//go:noinline
func callersRelease3(pcs *[maxDepth]uintptr) int { return callersRelease4(pcs) }

//go:noinline
func callersRelease4(pcs *[maxDepth]uintptr) int { return runtime.Callers(5, pcs[:]) }

func BenchmarkCallersBaseline(b *testing.B) {
	b.ReportAllocs()
	var pcs [maxDepth]uintptr
	n := 0
	for i := 0; i < b.N; i++ {
		n += callersPair(&pcs)
	}
	sinkCount.Store(int32(n))
}

func BenchmarkRetainReleaseTraced(b *testing.B) {
	Trace("BenchTraced")
	var o Object
	o.Init("BenchTraced", nil)
	defer o.Release()
	var pcs [maxDepth]uintptr
	n := 0
	ratio := interleavedRatio(b.N, 64, func() { n += callersPair(&pcs) }, func() {
		o.Retain()
		o.Release()
	})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o.Retain()
		o.Release()
	}
	b.StopTimer()
	b.ReportMetric(ratio, "x-callers")
	sinkCount.Store(int32(n))
}

func BenchmarkTaggedRetainReleaseTraced(b *testing.B) {
	Trace("BenchTracedTag")
	var o Object
	o.Init("BenchTracedTag", nil)
	defer o.Release()
	tag := &struct{ x int }{}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		o.TaggedRetain(tag)
		o.TaggedRelease(tag)
	}
}

// ten call sites for the memory benchmark.
//
//go:noinline
func site0(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site1(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site2(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site3(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site4(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site5(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site6(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site7(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site8(o *Object, t any) { o.TaggedRetain(t) }

//go:noinline
func site9(o *Object, t any) { o.TaggedRetain(t) }

var sites = [10]func(*Object, any){site0, site1, site2, site3, site4, site5, site6, site7, site8, site9}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkTracedMemoryPerRef holds 1,000,000 outstanding traced references
// taken at 10 call sites on 1,000 objects and reports the heap they cost
// per reference (objects, tags and the depot's 10 stacks included in the
// count only as far as tracing allocates them). Two tag shapes: the
// references of each site share one tag per object ("shared-tags"), or
// every reference has its own tag ("distinct-tags", a map entry each).
func BenchmarkTracedMemoryPerRef(b *testing.B) {
	const refs, objects = 1_000_000, 1_000
	for _, distinct := range []bool{false, true} {
		name := "shared-tags"
		if distinct {
			name = "distinct-tags"
		}
		b.Run(name, func(b *testing.B) {
			class := "BenchMem-" + name
			Trace(class)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				tags := make([]any, 10)
				for j := range tags {
					tags[j] = fmt.Sprintf("site%d", j)
				}
				var perRef []*int
				if distinct {
					perRef = make([]*int, refs)
					for j := range perRef {
						perRef[j] = new(int)
					}
				}
				objs := make([]Object, objects)
				before, stacksBefore := heapInUse(), DepotSize()
				b.StartTimer()
				for j := range objs {
					objs[j].Init(class, nil)
				}
				for j := 0; j < refs; j++ {
					var tag any = tags[j%10]
					if distinct {
						tag = perRef[j]
					}
					sites[j%10](&objs[j%objects], tag)
				}
				b.StopTimer()
				after := heapInUse()
				b.ReportMetric(float64(after-before)/refs, "B/ref")
				b.ReportMetric(float64(DepotSize()-stacksBefore), "new-stacks")
				for j := 0; j < refs; j++ {
					var tag any = tags[j%10]
					if distinct {
						tag = perRef[j]
					}
					objs[j%objects].TaggedRelease(tag)
				}
				for j := range objs {
					objs[j].Release()
				}
				runtime.KeepAlive(perRef)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkParallel runs retain/release pairs on distinct objects, one per
// goroutine: with no global lock the untraced path scales with cores.
func BenchmarkParallel(b *testing.B) {
	for _, traced := range []bool{false, true} {
		name := "untraced"
		if traced {
			name = "traced"
		}
		b.Run(name, func(b *testing.B) {
			class := "BenchParallel-" + name
			if traced {
				Trace(class)
			}
			// The same pairs on one goroutine first: with no global lock,
			// GOMAXPROCS goroutines on distinct objects take 1/GOMAXPROCS
			// of the time per pair (x-serial ≈ 0.5 on 2 idle cores); a lock
			// shared by all objects would keep x-serial ≥ 1.
			serial := new(Object)
			serial.Init(class, nil)
			t0 := time.Now()
			for i := 0; i < b.N; i++ {
				serial.Retain()
				serial.Release()
			}
			serialTime := time.Since(t0)
			serial.Release()
			b.ReportAllocs()
			b.ResetTimer()
			t1 := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				// Padded: two bare Objects may share a cache line, and
				// false sharing would hide what this measures.
				o := &new(paddedObject).Object
				o.Init(class, nil)
				for pb.Next() {
					o.Retain()
					o.Release()
				}
				o.Release()
			})
			b.ReportMetric(float64(time.Since(t1))/float64(max(serialTime, 1)), "x-serial")
		})
	}
}

// BenchmarkInit measures creating and freeing an object, untraced and
// traced (a traced Init registers the object; it learns its goroutine's
// ancestry only while a leaktest.Check runs, which a benchmark does not).
func BenchmarkInit(b *testing.B) {
	for _, traced := range []bool{false, true} {
		name := "untraced"
		if traced {
			name = "traced"
		}
		b.Run(name, func(b *testing.B) {
			class := "BenchInit-" + name
			if traced {
				Trace(class)
			}
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var o Object
				o.Init(class, nil)
				o.Release()
			}
		})
	}
}

type benchOwner struct{ _ int }

type paddedObject struct {
	_ [64]byte
	Object
	_ [64]byte
}

type benchTag struct{}

// BenchmarkTaggedUntraced: a tagged pair on an untraced object is the same
// atomic add as an untagged one when the tag converts to any without
// allocating (a pointer, a zero-size value); a tag with a value is boxed by
// Go at the call site (allocs/op of the "value" case), whatever the object.
func BenchmarkTaggedUntraced(b *testing.B) {
	var o Object
	o.Init("BenchTaggedUntraced", nil)
	owner := &benchOwner{}
	for _, bc := range []struct {
		name string
		op   func(i int)
	}{
		{"pointer", func(int) { o.TaggedRetain(owner); o.TaggedRelease(owner) }},
		{"zero-size", func(int) { o.TaggedRetain(benchTag{}); o.TaggedRelease(benchTag{}) }},
		{"value", func(i int) { o.TaggedRetain(i + 1000); o.TaggedRelease(i + 1000) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var n atomic.Int32
			ratio := interleavedRatio(b.N, 4096, func() { atomicPair(&n) }, func() { bc.op(0) })
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				bc.op(i)
			}
			b.StopTimer()
			b.ReportMetric(ratio, "x-atomic")
		})
	}
}
