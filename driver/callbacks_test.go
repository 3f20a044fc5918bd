package driver_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

// overlapDriver counts how many of its lifecycle callbacks are running at
// once; each lingers a little so that an overlap, if the registry allowed
// one, would be seen.
type overlapDriver struct {
	in, max, calls atomic.Int32
}

func (d *overlapDriver) enter() {
	v := d.in.Add(1)
	for m := d.max.Load(); v > m && !d.max.CompareAndSwap(m, v); m = d.max.Load() {
	}
	time.Sleep(50 * time.Microsecond)
	d.calls.Add(1)
	d.in.Add(-1)
}

func (d *overlapDriver) Probe(context.Context, *driver.Service) (int, bool) {
	d.enter()
	return 1, true
}
func (d *overlapDriver) Start(context.Context, *driver.Service) error  { d.enter(); return nil }
func (d *overlapDriver) Stop(*driver.Service)                          { d.enter() }
func (d *overlapDriver) WillTerminate(*driver.Service)                 { d.enter() }
func (d *overlapDriver) DidTerminate(*driver.Service)                  { d.enter() }
func (d *overlapDriver) Message(*driver.Service, driver.Message) error { d.enter(); return nil }

var (
	_ driver.Prober         = (*overlapDriver)(nil)
	_ driver.WillTerminater = (*overlapDriver)(nil)
	_ driver.DidTerminater  = (*overlapDriver)(nil)
	_ driver.MessageHandler = (*overlapDriver)(nil)
)

// The lifecycle callbacks of one service never run concurrently (DESIGN.md),
// even while messages pour in from several goroutines during Probe, Start
// and termination.
func TestCallbacksOfOneServiceNeverOverlap(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var drivers []*overlapDriver
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "overlap", Class: "OverlapDriver", New: func() driver.Driver {
		d := &overlapDriver{}
		mu.Lock()
		drivers = append(drivers, d)
		mu.Unlock()
		return d
	}}))
	for range 20 {
		nub := e.r.NewNub("Nub", "n", driver.Properties{})
		published := make(chan error, 1)
		go func() { published <- e.r.Publish(nil, nub) }()
		var senders sync.WaitGroup
		for range 4 {
			senders.Add(1)
			go func() {
				defer senders.Done()
				for k := range 50 {
					nub.MessageClients(driver.MessageDriverDefined, k)
				}
			}()
		}
		require.NoError(t, <-published)
		nub.Terminate()
		senders.Wait()
	}
	require.NoError(t, e.r.WaitQuiet(ctxT(t)))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, drivers, 20)
	var calls int32
	for _, d := range drivers {
		calls += d.calls.Load()
		require.EqualValues(t, 1, d.max.Load(), "callbacks of one service ran at once")
	}
	// Probe, Start, WillTerminate, DidTerminate and Stop of 20 instances,
	// plus the messages delivered while they were attached.
	require.Greater(t, calls, int32(20*5))
	e.quiet()
}
