package driver_test

import (
	"encoding/binary"
	"flag"
	"hash/crc64"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

// The torture test runs 2 s by default so that `make test` (-race) stays
// short; the 10 s run is `go test -run EPICS ./driver -epics.duration=10s`.
var epicsDuration = flag.Duration("epics.duration", 2*time.Second, "how long the torn-read torture test runs")

// reading is a 4 KiB monitored value carrying its own checksum, like an
// EPICS waveform or string written by a monitor callback.
type reading struct {
	Seq  uint64
	Data [4096]byte
	Sum  uint64
}

var crcTable = crc64.MakeTable(crc64.ECMA)

func makeReading(seq uint64) reading {
	var r reading
	r.Seq = seq
	for i := 0; i < len(r.Data); i += 8 {
		binary.LittleEndian.PutUint64(r.Data[i:], seq*0x9e3779b97f4a7c15+uint64(i))
	}
	r.Sum = r.checksum()
	return r
}

func (r *reading) checksum() uint64 {
	var seq [8]byte
	binary.LittleEndian.PutUint64(seq[:], r.Seq)
	return crc64.Update(crc64.Checksum(seq[:], crcTable), crcTable, r.Data[:])
}

func (r *reading) ok() bool { return r.Sum == r.checksum() }

// The EPICS case: a writer stores checksummed 4 KiB values as fast as it
// can; readers verify every Load and every View. Not one may be torn.
func TestEPICSNoTornReads(t *testing.T) {
	g := driver.NewGroup()
	a := driver.NewMonitored(g, makeReading(0))
	b := driver.NewMonitored(g, makeReading(0))
	solo := driver.NewMonitored(nil, makeReading(0))

	var stop atomic.Bool
	var writes, loads, views, torn, inconsistent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	// Readings are made ahead: the checksum of a 4 KiB value would
	// otherwise be most of the writer's time and slow it to a few
	// thousand writes a second.
	var ring [256]reading
	for i := range ring {
		ring[i] = makeReading(uint64(i + 1))
	}
	go func() { // the monitor callback side
		defer wg.Done()
		for seq := 0; !stop.Load(); seq++ {
			v := ring[seq%len(ring)]
			solo.Store(v)
			g.Update(func(tx *driver.Tx) { // a and b always change together
				driver.Set(tx, a, v)
				driver.Set(tx, b, v)
			})
			writes.Add(1)
		}
	}()
	reader := func(f func()) {
		defer wg.Done()
		for !stop.Load() {
			f()
		}
	}
	wg.Add(3)
	go reader(func() { // every Load, copying
		v := solo.Load()
		if !v.ok() {
			torn.Add(1)
		}
		w := a.Load()
		if !w.ok() {
			torn.Add(1)
		}
		loads.Add(2)
	})
	go reader(func() { // Load without the copy
		if p := b.Pointer(); !p.ok() {
			torn.Add(1)
		}
		loads.Add(1)
	})
	go reader(func() { // one View: both values of the same instant, in the
		// condition and in its action
		g.When(func(v *driver.View) bool {
			return driver.GetPointer(v, a).Seq%2 == 0
		}, func(v *driver.View) {
			pa, pb := driver.GetPointer(v, a), driver.GetPointer(v, b)
			if !pa.ok() || !pb.ok() {
				torn.Add(1)
			}
			if pa.Seq != pb.Seq || pa.Seq%2 != 0 {
				inconsistent.Add(1)
			}
		})
		views.Add(1)
	})
	time.Sleep(*epicsDuration)
	stop.Store(true)
	wg.Wait()
	t.Logf("%v: %d writes, %d loads, %d views, %d torn, %d inconsistent views",
		*epicsDuration, writes.Load(), loads.Load(), views.Load(), torn.Load(), inconsistent.Load())
	require.Positive(t, writes.Load())
	require.Positive(t, loads.Load())
	require.Positive(t, views.Load())
	require.Zero(t, torn.Load(), "torn reads")
	require.Zero(t, inconsistent.Load(), "a view mixed two instants")
}

func TestMonitoredBasics(t *testing.T) {
	m := driver.NewMonitored[string](nil, "idle")
	require.Equal(t, "idle", m.Load())
	m.Store("busy")
	require.Equal(t, "busy", m.Load())
	m.Update(func(s string) string { return s + "!" })
	require.Equal(t, "busy!", m.Load())

	g := driver.NewGroup()
	x := driver.NewMonitored(g, 1)
	y := driver.NewMonitored(g, "a")
	v1 := g.View()
	x.Store(2)
	y.Update(func(s string) string { return s + "b" })
	v2 := g.View()
	require.Equal(t, 1, driver.Get(v1, x), "a view never changes")
	require.Equal(t, "a", driver.Get(v1, y))
	require.Equal(t, 2, driver.Get(v2, x))
	require.Equal(t, "ab", driver.Get(v2, y))
	require.Greater(t, v2.Version(), v1.Version())
	require.False(t, g.When(func(v *driver.View) bool { return driver.Get(v, x) > 5 }, func(*driver.View) { t.Fatal("ran") }))
	require.Panics(t, func() { g.Update(func(tx *driver.Tx) { driver.Set(tx, m, "other group") }) })
}

// Get and GetPointer with a value of another group (or of none) panic as
// Set does: the index of a foreign value names another group's variable,
// and reading it would silently return the wrong value.
func TestGetOtherGroupPanics(t *testing.T) {
	g1, g2 := driver.NewGroup(), driver.NewGroup()
	a := driver.NewMonitored(g1, 1)
	b := driver.NewMonitored(g2, 2)
	loose := driver.NewMonitored[int](nil, 3)
	require.Equal(t, 1, driver.Get(g1.View(), a))
	for _, tc := range []struct {
		name string
		f    func()
		msg  string
	}{
		{"Get", func() { driver.Get(g1.View(), b) }, "driver: Get on a value of another group"},
		{"GetPointer", func() { driver.GetPointer(g2.View(), a) }, "driver: Get on a value of another group"},
		{"no group", func() { driver.Get(g1.View(), loose) }, "driver: Get on a value that belongs to no group (NewMonitored with a nil group)"},
		{"Set no group", func() { g1.Update(func(tx *driver.Tx) { driver.Set(tx, loose, 4) }) }, "driver: Set on a value that belongs to no group (NewMonitored with a nil group)"},
	} {
		t.Run(tc.name, func(t *testing.T) { require.PanicsWithValue(t, tc.msg, tc.f) })
	}
}
