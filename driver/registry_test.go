package driver_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
)

func TestCloseCancelsQueuedJobs(t *testing.T) {
	r := driver.NewRegistry(driver.WithLogger(quietLogger()), driver.WithJobConcurrency(1))
	rec := lifecycletest.Record(t, r)
	var ran, freed atomic.Int32
	entered := make(chan struct{})
	require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "q", New: func() driver.Driver {
		return &testDriver{log: &callLog{}, start: func(ctx context.Context, s *driver.Service) error {
			for i := range 11 {
				if err := s.Submit(driver.Job{
					Run: func(ctx context.Context) error {
						ran.Add(1)
						if i == 0 {
							close(entered)
						}
						<-ctx.Done()
						return nil
					},
					Free: func() { freed.Add(1) }}); err != nil {
					return err
				}
			}
			return nil
		}}
	}}))
	nub := r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, r.Publish(nil, nub))
	<-entered
	require.NoError(t, r.Close(ctxT(t)))
	require.EqualValues(t, 1, ran.Load())
	require.EqualValues(t, 11, freed.Load(), "every free hook runs once when the registry shuts down")
	require.Empty(t, r.Services())
	require.ErrorIs(t, r.Publish(nil, r.NewNub("Nub", "late", driver.Properties{})), driver.ErrClosed)
	rec.Check(t)
	goleak.VerifyNone(t)
}

func TestCloseBlockedReportsAndCancelsQueue(t *testing.T) {
	r := driver.NewRegistry(driver.WithLogger(quietLogger()), driver.WithJobConcurrency(1))
	rec := lifecycletest.Record(t, r)
	release := make(chan struct{})
	entered := make(chan struct{})
	var freed atomic.Int32
	require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "q", New: func() driver.Driver {
		return &testDriver{log: &callLog{}, start: func(ctx context.Context, s *driver.Service) error {
			for i := range 3 {
				_ = s.Submit(driver.Job{Key: "io",
					Run:  func(context.Context) error { close(entered); <-release; return nil },
					Free: func() { freed.Add(1) }})
				_ = i
			}
			return nil
		}}
	}}))
	nub := r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, r.Publish(nil, nub))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := r.Close(ctx)
	require.ErrorIs(t, err, driver.ErrBlocked)
	require.Contains(t, err.Error(), "job#1(io) running since")
	require.EqualValues(t, 2, freed.Load(), "queued jobs are cancelled at shutdown")
	close(release)
	require.Eventually(t, func() bool { return freed.Load() == 3 }, 5*time.Second, time.Millisecond)
	rec.CheckPartial(t)
	goleak.VerifyNone(t)
}

func TestMultiProviderClientSurvives(t *testing.T) {
	e := newEnv(t)
	p1 := e.r.NewNub("Nub", "p1", driver.Properties{})
	p2 := e.r.NewNub("Nub", "p2", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, p1))
	require.NoError(t, e.r.Publish(nil, p2))
	h := &testDriver{log: e.log, messages: make(chan driver.Message, 8)}
	c, err := e.r.AttachClient(p1, "Mux", "c", h)
	require.NoError(t, err)
	require.NoError(t, e.r.AttachProvider(c, p2))
	require.NoError(t, p1.Open(c, driver.OpenOptions{}))
	p1.Terminate()
	require.Equal(t, p1.ID(), waitMessage(t, h.messages, driver.ServiceIsRequestingClose).From)
	require.NoError(t, p1.Close(c))
	require.NoError(t, p1.TerminateSync(ctxT(t)))
	require.True(t, c.State().Active, "a client with another active provider survives")
	require.Equal(t, []*driver.Service{p2}, c.Providers())
	require.Equal(t, []string{"terminate p1", "willTerminate p1", "didTerminate p1", "detach c<-p1", "stop p1", "detach p1<-root", "free p1"},
		e.rec.Steps(driver.StepTerminate, driver.StepWillTerminate, driver.StepDidTerminate, driver.StepStop, driver.StepDetach, driver.StepFree))
	require.NoError(t, p2.TerminateSync(ctxT(t)))
	waitFreed(t, c)
	e.quiet()
}

func TestUnpublishedNubAndLookup(t *testing.T) {
	e := newEnv(t)
	nub := e.r.NewNub("Nub", "loose", driver.NewProperties(map[string]any{"b": []byte{1, 2}}))
	s, release, ok := e.r.Lookup(nub.ID())
	require.True(t, ok)
	require.Same(t, nub, s)
	require.Equal(t, 2, nub.RetainCount())
	release()
	release() // idempotent
	require.Equal(t, 1, nub.RetainCount())
	b, _ := nub.Properties().Bytes("b")
	b[0] = 9
	b2, _ := nub.Properties().Bytes("b")
	require.Equal(t, []byte{1, 2}, b2, "properties are immutable")
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	_, _, ok = e.r.Lookup(nub.ID())
	require.False(t, ok)
	require.ErrorIs(t, e.r.Publish(nil, nub), driver.ErrNotActive)
	e.quiet()
}

// Drivers may terminate and close from their own callbacks and jobs
// without deadlocking the registry.
func TestTerminateFromCallbacks(t *testing.T) {
	e := newEnv(t)
	var nubSeen atomic.Pointer[driver.Service]
	nub, d := publishWith(t, e, "selfkill", func() driver.Driver {
		return &testDriver{log: e.log,
			start: func(ctx context.Context, s *driver.Service) error {
				p := s.Providers()[0]
				nubSeen.Store(p)
				return p.Open(s, driver.OpenOptions{Exclusive: true})
			},
			message: func(s *driver.Service, m driver.Message) error {
				if m.Type == driver.ServiceIsRequestingClose {
					return s.Providers()[0].Close(s) // close from the message handler
				}
				if m.Type == driver.MessageDriverDefined {
					s.Providers()[0].Terminate() // the device reports it is gone
				}
				return nil
			}}
	})
	require.Same(t, nub, nubSeen.Load())
	require.NoError(t, d.Submit(driver.Job{Run: func(context.Context) error {
		nub.MessageClients(driver.MessageDriverDefined, nil)
		return nil
	}}))
	waitFreed(t, nub, d)
	e.quiet()
}

func TestPanicsInOtherCallbacks(t *testing.T) {
	e := newEnv(t)
	nub, d := publishWith(t, e, "p", func() driver.Driver {
		return &panicky{testDriver{log: e.log, message: func(*driver.Service, driver.Message) error { panic("message") }}}
	})
	d.AddInterest(func(driver.Message) { panic("listener") })
	d.Notify(driver.MessageDriverDefined, nil)
	nub.MessageClients(driver.MessageDriverDefined, nil)
	require.NoError(t, d.Submit(driver.Job{Run: func(context.Context) error { panic("job") }, Free: func() { panic("free") }}))
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

type panicky struct{ testDriver }

func (p *panicky) WillTerminate(*driver.Service) { panic("will") }
func (p *panicky) DidTerminate(*driver.Service)  { panic("did") }
func (p *panicky) Probe(context.Context, *driver.Service) (int, bool) {
	return 0, true
}
