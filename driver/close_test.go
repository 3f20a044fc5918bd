package driver_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/stretchr/testify/require"
)

type lateHolder struct{}

// TestCloseWaitsForFreeAnnouncements: a service's last reference dropped
// on another goroutine (an application's connection, a job) leaves the
// registry's list before its free step reaches the subscribers. Close
// returns only once that step was delivered, so that a subscriber — a
// lifecycle trace, the verifier — hears every free (a trace checked after
// Close saw "terminated but never freed" under load).
func TestCloseWaitsForFreeAnnouncements(t *testing.T) {
	leaktest.Check(t)
	r := driver.NewRegistry(driver.WithLogger(quietLogger()))
	nub := r.NewNub("Device", "late", driver.Properties{})
	require.NoError(t, r.Publish(nil, nub))
	nub.TaggedRetain(lateHolder{})
	inFree, release := make(chan struct{}), make(chan struct{})
	var heard []string
	var mu sync.Mutex
	cancel := r.SubscribeLifecycle(func(ev driver.LifecycleEvent) {
		if ev.Step == driver.StepFree && ev.Name == "late" {
			close(inFree)
			<-release
		}
		mu.Lock()
		heard = append(heard, ev.Step.String()+" "+ev.Name)
		mu.Unlock()
	})
	defer cancel()
	nub.Terminate()
	require.Eventually(t, func() bool { return nub.State().Stopped }, 10*time.Second, time.Millisecond)
	go nub.TaggedRelease(lateHolder{}) // the last reference, elsewhere
	<-inFree
	closed := make(chan error, 1)
	go func() { closed <- r.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a free step was still being delivered", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-closed)
	mu.Lock()
	defer mu.Unlock()
	require.Contains(t, heard, "free late")
}

// TestWaitQuietWaitsForFreeAnnouncements is the same window for WaitQuiet:
// a trace checked right after it returned saw "terminated but never freed"
// (CI, TestTerminateDuringMatching under -race).
func TestWaitQuietWaitsForFreeAnnouncements(t *testing.T) {
	leaktest.Check(t)
	r := driver.NewRegistry(driver.WithLogger(quietLogger()))
	t.Cleanup(func() { require.NoError(t, r.Close(context.Background())) })
	nub := r.NewNub("Device", "late", driver.Properties{})
	require.NoError(t, r.Publish(nil, nub))
	inFree, release := make(chan struct{}), make(chan struct{})
	cancel := r.SubscribeLifecycle(func(ev driver.LifecycleEvent) {
		if ev.Step == driver.StepFree && ev.Name == "late" {
			close(inFree)
			<-release
		}
	})
	defer cancel()
	go nub.Terminate()
	<-inFree
	quiet := make(chan error, 1)
	go func() { quiet <- r.WaitQuiet(context.Background()) }()
	select {
	case err := <-quiet:
		close(release)
		t.Fatalf("WaitQuiet returned (%v) while a free step was still being delivered", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-quiet)
}

// TestCloseWaitsForFreeInFlight: the free of a service unlisted before
// Close looked, and announced only after the rest of the registry is gone
// (the goroutine that dropped the last reference was preempted in
// between), still reaches the trace before Close returns. The verifier
// and the fault explorer saw "terminated but never freed" under -race.
func TestCloseWaitsForFreeInFlight(t *testing.T) {
	leaktest.Check(t)
	r := driver.NewRegistry(driver.WithLogger(quietLogger()))
	rec := lifecycletest.Record(t, r)
	nub := r.NewNub("Device", "late", driver.Properties{})
	require.NoError(t, r.Publish(nil, nub))
	nub.TaggedRetain(lateHolder{})
	inWindow, release := make(chan struct{}), make(chan struct{})
	defer driver.SetAnnounceHook(func(s *driver.Service) {
		if s.Name() == "late" {
			close(inWindow)
			<-release
		}
	})()
	nub.Terminate()
	require.Eventually(t, func() bool { return nub.State().Stopped }, 10*time.Second, time.Millisecond)
	go nub.TaggedRelease(lateHolder{})
	<-inWindow
	closed := make(chan error, 1)
	go func() { closed <- r.Close(context.Background()) }()
	select {
	case err := <-closed:
		close(release)
		t.Fatalf("Close returned (%v) while a free was still to be announced", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-closed)
	rec.Check(t)
}
