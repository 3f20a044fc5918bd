package driver_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
)

// publishWith publishes a nub matched by a driver built from d and returns
// the nub and the driver instance.
func publishWith(t *testing.T, e *env, name string, d func() driver.Driver) (*driver.Service, *driver.Service) {
	t.Helper()
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: name, Class: name,
		Match: []driver.Match{driver.MatchValue("driver", name)}, New: d}))
	nub := e.r.NewNub("Nub", name+"-nub", driver.NewProperties(map[string]any{"driver": name}))
	require.NoError(t, e.r.Publish(nil, nub))
	cs := nub.Clients()
	require.Len(t, cs, 1)
	return nub, cs[0]
}

// The Erlang case: stop with 100 queued and 4 running jobs.
func TestStopCancelsQueuedAndDrainsRunning(t *testing.T) {
	e := newEnv(t, driver.WithJobConcurrency(4))
	const running, queued = 4, 100
	var (
		frees     [running + queued]atomic.Int32
		ran       atomic.Int32
		finished  atomic.Int32
		cancelled atomic.Int32
		allIn     sync.WaitGroup
	)
	allIn.Add(running)
	var stopSaw struct{ finished, queued, running int }
	mk := func() driver.Driver {
		return &testDriver{log: e.log,
			start: func(ctx context.Context, s *driver.Service) error {
				for i := range running + queued {
					err := s.Submit(driver.Job{
						Run: func(ctx context.Context) error {
							ran.Add(1)
							allIn.Done() // only the first 4 can get here before Stop
							<-ctx.Done()
							cancelled.Add(1)
							time.Sleep(20 * time.Millisecond) // draining takes a while
							finished.Add(1)
							return ctx.Err()
						},
						Free: func() { frees[i].Add(1) },
					})
					if err != nil {
						return err
					}
				}
				return nil
			},
			stop: func(s *driver.Service) {
				stopSaw.finished = int(finished.Load())
				stopSaw.queued, stopSaw.running = s.Jobs()
			}}
	}
	nub, inst := publishWith(t, e, "erlang", mk)
	allIn.Wait()
	q, r := inst.Jobs()
	require.Equal(t, queued, q)
	require.Equal(t, running, r)
	require.Equal(t, 2+running+queued, inst.RetainCount(), "registry + its provider + one per job")

	require.NoError(t, nub.TerminateSync(ctxT(t)))

	require.EqualValues(t, running, ran.Load(), "queued jobs never run")
	require.EqualValues(t, running, cancelled.Load(), "running jobs see their context cancelled")
	require.Equal(t, running, stopSaw.finished, "Stop runs only after the running jobs returned")
	require.Zero(t, stopSaw.queued)
	require.Zero(t, stopSaw.running)
	for i := range frees {
		require.EqualValues(t, 1, frees[i].Load(), "free hook of job %d", i)
	}
	e.quiet()
}

func TestSubmitAfterStopRunsFree(t *testing.T) {
	e := newEnv(t)
	var inst *driver.Service
	nub, inst := publishWith(t, e, "late", func() driver.Driver { return &testDriver{log: e.log} })
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	var freed atomic.Int32
	err := inst.Submit(driver.Job{Run: func(context.Context) error { t.Error("ran"); return nil }, Free: func() { freed.Add(1) }})
	require.ErrorIs(t, err, driver.ErrNotActive)
	require.EqualValues(t, 1, freed.Load())
	e.quiet()
}

func TestJobsPerKeyOrderAndBound(t *testing.T) {
	e := newEnv(t, driver.WithJobConcurrency(3))
	_, inst := publishWith(t, e, "keys", func() driver.Driver { return &testDriver{log: e.log} })
	var mu sync.Mutex
	order := map[string][]int{}
	var cur, peak atomic.Int32
	var wg sync.WaitGroup
	keyBusy := map[string]*atomic.Int32{"a": {}, "b": {}}
	for i := range 60 {
		key := []string{"a", "b", ""}[i%3]
		wg.Add(1)
		require.NoError(t, inst.Submit(driver.Job{Key: key,
			Run: func(context.Context) error {
				n := cur.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				if key != "" {
					require.EqualValues(t, 1, keyBusy[key].Add(1), "two %q jobs at once", key)
					defer keyBusy[key].Add(-1)
				}
				time.Sleep(time.Millisecond)
				mu.Lock()
				order[key] = append(order[key], i)
				mu.Unlock()
				cur.Add(-1)
				return nil
			},
			Free: wg.Done}))
	}
	wg.Wait()
	require.LessOrEqual(t, peak.Load(), int32(3))
	for _, k := range []string{"a", "b"} {
		require.IsIncreasing(t, order[k], "key %q in submit order", k)
		require.Len(t, order[k], 20)
	}
	e.quiet()
}

// A job that ignores cancellation is named in TerminateSync's report.
func TestTerminateSyncReportsStubbornJob(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	started := make(chan struct{})
	var freed atomic.Int32
	nub, _ := publishWith(t, e, "stubborn", func() driver.Driver {
		return &testDriver{log: e.log, start: func(ctx context.Context, s *driver.Service) error {
			return s.Submit(driver.Job{Key: "firmware-update",
				Run:  func(context.Context) error { close(started); <-release; return nil }, // ignores ctx
				Free: func() { freed.Add(1) }})
		}}
	})
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := nub.TerminateSync(ctx)
	require.ErrorIs(t, err, driver.ErrBlocked)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var be *driver.BlockedError
	require.ErrorAs(t, err, &be)
	msg := err.Error()
	require.Contains(t, msg, `stubborn#`)
	require.Contains(t, msg, `job#1(firmware-update) running since`)
	require.Contains(t, msg, "its context cancelled")
	require.Contains(t, msg, "waits for running jobs to return")
	t.Log(msg)
	close(release)
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	require.EqualValues(t, 1, freed.Load())
	e.quiet()
}

func leakReference(s *driver.Service) { s.TaggedRetain("leaked-by-test") }

func TestUnloadRefusesWithLeakedReference(t *testing.T) {
	refcount.Trace("LeakyDriver") // TestMain traces everything; say so anyway
	e := newEnv(t)
	var inst *driver.Service
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "leaky", Class: "LeakyDriver", New: func() driver.Driver {
		return &testDriver{log: e.log, start: func(ctx context.Context, s *driver.Service) error {
			inst = s
			leakReference(s) // the bug
			return nil
		}}
	}}))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))
	require.True(t, inst.Traced())

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := e.r.Unload(ctx, "leaky")
	require.ErrorIs(t, err, driver.ErrHasInstances)
	var he *driver.HasInstancesError
	require.ErrorAs(t, err, &he)
	require.Equal(t, map[string]int{"LeakyDriver": 1}, he.Instances)
	msg := err.Error()
	t.Log(msg)
	require.Contains(t, msg, "classes have instances: LeakyDriver(1)")
	require.Contains(t, msg, "held by leaked-by-test ×1")
	require.Contains(t, msg, "driver_test.leakReference")
	require.Contains(t, msg, "jobs_test.go")
	require.Len(t, nub.Clients(), 0, "the instance was terminated and detached")
	require.False(t, errors.Is(err, driver.ErrBlocked))

	inst.TaggedRelease("leaked-by-test") // fix the bug
	require.NoError(t, e.r.Unload(ctxT(t), "leaky"))
	waitFreed(t, inst)
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// Matched means driven now: a failed probe or a losing candidate leaves a
// nub unmatched, unloading its driver clears it, and a later personality
// sets it again.
func TestMatchedFollowsTheDriver(t *testing.T) {
	e := newEnv(t)
	failing := driver.Personality{Name: "failing", Class: "FailingDriver", New: func() driver.Driver {
		return &testDriver{log: e.log, start: func(context.Context, *driver.Service) error { return errors.New("no") }}
	}}
	require.NoError(t, e.r.RegisterPersonality(failing))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))
	require.NoError(t, e.r.WaitQuiet(ctxT(t)))
	require.False(t, nub.State().Matched, "its only driver failed to start")
	require.NoError(t, e.r.Unload(ctxT(t), "failing"))

	good := driver.Personality{Name: "good", Class: "GoodDriver", New: func() driver.Driver { return &testDriver{log: e.log} }}
	require.NoError(t, e.r.RegisterPersonality(good))
	require.True(t, nub.State().Matched)
	require.NoError(t, e.r.Unload(ctxT(t), "good"))
	require.False(t, nub.State().Matched, "unloaded: nothing drives it")
	require.True(t, nub.State().Active)

	require.NoError(t, e.r.RegisterPersonality(good))
	require.True(t, nub.State().Matched, "matched again")
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}
