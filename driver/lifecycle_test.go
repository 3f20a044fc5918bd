package driver_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

// usbDevice publishes a device nub with n interface nubs under it.
func usbDevice(t *testing.T, r *driver.Registry, name string, n int) (*driver.Service, []*driver.Service) {
	t.Helper()
	dev := r.NewNub("USBDevice", name, driver.NewProperties(map[string]any{"idVendor": 0x0781, "idProduct": 0x5567}))
	require.NoError(t, r.Publish(nil, dev))
	var ifs []*driver.Service
	for i := 0; i < n; i++ {
		nub := r.NewNub("USBInterface", "if"+string(rune('0'+i)), driver.NewProperties(map[string]any{
			"bInterfaceNumber": i, "bInterfaceClass": 0x08}))
		require.NoError(t, r.Publish(dev, nub))
		ifs = append(ifs, nub)
	}
	return dev, ifs
}

func TestHotUnplugOrder(t *testing.T) {
	e := newEnv(t)
	r := e.r
	for i, name := range []string{"drv0", "drv1"} {
		require.NoError(t, r.RegisterPersonality(driver.Personality{
			Name: name, Class: "MassStorage", ProviderClass: "USBInterface",
			Match: []driver.Match{driver.MatchValue("bInterfaceNumber", i), driver.MatchMasked("bInterfaceClass", 0x08, 0xff)},
			New:   func() driver.Driver { return &testDriver{log: e.log} },
		}))
	}
	dev, ifs := usbDevice(t, r, "dev", 2)
	ucs := map[string]*testDriver{}
	var holder *driver.Service
	var drv0 *driver.Service
	for i, nub := range ifs {
		cs := nub.Clients()
		require.Len(t, cs, 1)
		d := cs[0]
		for _, suffix := range []string{"a", "b"} {
			name := "uc" + string(rune('0'+i)) + suffix
			h := &testDriver{log: e.log, messages: make(chan driver.Message, 16)}
			ucs[name] = h
			uc, err := r.AttachClient(d, "UserClient", name, h)
			require.NoError(t, err)
			if name == "uc0a" {
				require.NoError(t, d.Open(uc, driver.OpenOptions{Exclusive: true}))
				holder, drv0 = uc, d
			}
		}
	}
	before := len(e.rec.Events())

	dev.Terminate() // the device is unplugged

	// uc0a is asked to close, and termination waits for it.
	waitMessage(t, ucs["uc0a"].messages, driver.ServiceIsRequestingClose)
	time.Sleep(50 * time.Millisecond) // give a wrong implementation the chance to run ahead
	for _, s := range e.rec.Steps(driver.StepStop, driver.StepFree) {
		require.NotContains(t, []string{"stop drv0", "stop if0", "stop dev", "free dev"}, s, "ran before uc0a closed")
	}
	require.NotContains(t, e.rec.Steps(driver.StepDidTerminate), "didTerminate drv0")
	require.ErrorIs(t, drv0.Open(holder, driver.OpenOptions{}), driver.ErrNotActive)
	require.NoError(t, drv0.Close(holder))
	waitFreed(t, dev)

	got := e.rec.Steps(driver.StepTerminate, driver.StepWillTerminate, driver.StepDidTerminate, driver.StepStop, driver.StepDetach)
	_ = before
	want := []string{
		"terminate dev", "terminate if0", "terminate if1", "terminate drv0", "terminate drv1",
		"terminate uc0a", "terminate uc0b", "terminate uc1a", "terminate uc1b",
		"willTerminate dev", "willTerminate if0", "willTerminate if1", "willTerminate drv0", "willTerminate drv1",
		"willTerminate uc0a", "willTerminate uc0b", "willTerminate uc1a", "willTerminate uc1b",
		"didTerminate uc1b", "didTerminate uc1a", "didTerminate uc0b", "didTerminate uc0a", "didTerminate drv1",
		"didTerminate drv0", "didTerminate if1", "didTerminate if0", "didTerminate dev",
		"stop uc1b", "detach uc1b<-drv1", "stop uc1a", "detach uc1a<-drv1",
		"stop uc0b", "detach uc0b<-drv0", "stop uc0a", "detach uc0a<-drv0",
		"stop drv1", "detach drv1<-if1", "stop drv0", "detach drv0<-if0",
		"stop if1", "detach if1<-dev", "stop if0", "detach if0<-dev",
		"stop dev", "detach dev<-root",
	}
	require.Equal(t, want, got)
	frees := e.rec.Steps(driver.StepFree)
	require.Len(t, frees, 9)
	e.quiet()
	// Drivers saw their callbacks in contract order too.
	calls := strings.Join(e.log.get(), "\n")
	require.Less(t, strings.Index(calls, "stop uc0a"), strings.Index(calls, "stop drv0"))
	require.Less(t, strings.Index(calls, "didTerminate drv0"), strings.Index(calls, "stop uc1b"))
}

func waitMessage(t *testing.T, ch chan driver.Message, typ driver.MessageType) driver.Message {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-ch:
			if m.Type == typ {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s message", typ)
		}
	}
}

func TestTerminateDuringStart(t *testing.T) {
	e := newEnv(t)
	entered := make(chan struct{})
	var sawCancel atomic.Bool
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "slow", New: func() driver.Driver {
		return &testDriver{log: e.log, start: func(ctx context.Context, s *driver.Service) error {
			close(entered)
			<-ctx.Done() // Start's context ends when the nub goes
			sawCancel.Store(true)
			return nil // and it may still report success: Stop must follow
		}}
	}}))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	done := make(chan error, 1)
	go func() { done <- e.r.Publish(nil, nub) }()
	<-entered
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	require.NoError(t, <-done)
	require.True(t, sawCancel.Load())
	require.Equal(t, []string{"start slow", "willTerminate slow", "didTerminate slow", "stop slow"}, e.log.lifecycle())
	e.quiet()
}

func TestTerminateTwice(t *testing.T) {
	e := newEnv(t)
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))
	nub.Terminate()
	nub.Terminate()
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	require.Equal(t, []string{"publish n", "attach n<-root", "terminate n", "willTerminate n", "didTerminate n",
		"stop n", "detach n<-root", "free n"}, e.rec.Steps())
	e.quiet()
}

func TestTerminateDuringMatching(t *testing.T) {
	e := newEnv(t)
	probing := make(chan struct{})
	release := make(chan struct{})
	var started atomic.Int32
	mk := func(name string, score int, block bool) driver.Personality {
		return driver.Personality{Name: name, Score: score, New: func() driver.Driver {
			return &probeDriver{testDriver: testDriver{log: e.log, start: func(context.Context, *driver.Service) error {
				started.Add(1)
				return nil
			}}, probeFn: func() (int, bool) {
				if block {
					close(probing)
					<-release
				}
				return score, true
			}}
		}}
	}
	require.NoError(t, e.r.RegisterPersonality(mk("a", 10, true)))
	require.NoError(t, e.r.RegisterPersonality(mk("b", 5, false)))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	done := make(chan error, 1)
	go func() { done <- e.r.Publish(nil, nub) }()
	<-probing
	nub.Terminate()
	close(release)
	require.NoError(t, <-done)
	waitFreed(t, nub)
	require.Zero(t, started.Load(), "no driver may start on a terminated nub")
	e.quiet()
}

type probeDriver struct {
	testDriver
	probeFn func() (int, bool)
}

func (d *probeDriver) Probe(ctx context.Context, s *driver.Service) (int, bool) { return d.probeFn() }

func TestOpenDuringTermination(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "d", New: func() driver.Driver { return &testDriver{log: e.log} }}))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))
	d := nub.Clients()[0]
	h := &testDriver{log: e.log, messages: make(chan driver.Message, 8)}
	uc, err := e.r.AttachClient(d, "UserClient", "uc", h)
	require.NoError(t, err)
	require.NoError(t, d.Open(uc, driver.OpenOptions{}))
	nub.Terminate()
	// d is inactive from phase 1 on: a new open is refused, even by its own client.
	err = d.Open(uc, driver.OpenOptions{Exclusive: true})
	require.ErrorIs(t, err, driver.ErrNotActive)
	var op *driver.OpError
	require.ErrorAs(t, err, &op)
	require.Equal(t, "open", op.Op)
	_, err = e.r.AttachClient(d, "UserClient", "late", &testDriver{log: e.log})
	require.ErrorIs(t, err, driver.ErrNotActive)
	waitMessage(t, h.messages, driver.ServiceIsRequestingClose)
	require.NoError(t, d.Close(uc))
	waitFreed(t, nub, d, uc)
	e.quiet()
}

func TestPanicInStart(t *testing.T) {
	e := newEnv(t)
	var closed []string
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "bad", Score: 10, New: func() driver.Driver {
		return &testDriver{log: e.log, start: func(ctx context.Context, s *driver.Service) error {
			require.NoError(t, s.ManageFunc(func() { closed = append(closed, "first") }))
			require.NoError(t, s.ManageFunc(func() { closed = append(closed, "second") }))
			panic("boom")
		}}
	}}))
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "good", Score: 1, New: func() driver.Driver { return &testDriver{log: e.log} }}))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub)) // the registry carries on
	require.Equal(t, []string{"second", "first"}, closed, "managed resources released in reverse when Start fails")
	var active []string
	for _, c := range nub.Clients() {
		if c.State().Active {
			active = append(active, c.Name())
		}
	}
	require.Equal(t, []string{"good"}, active)
	var startErr string
	for _, ev := range e.rec.Events() {
		if ev.Step == driver.StepStart && ev.Name == "bad" {
			startErr = ev.Err
		}
	}
	require.Contains(t, startErr, "Start of")
	require.Contains(t, startErr, "panicked: boom")
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	require.Equal(t, []string{"start bad", "start good", "willTerminate good", "didTerminate good", "stop good"}, e.log.lifecycle(),
		"a driver whose Start failed is never stopped")
	e.quiet()
}

func TestPanicInStop(t *testing.T) {
	e := newEnv(t)
	var released atomic.Bool
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "bad", New: func() driver.Driver {
		return &testDriver{log: e.log,
			start: func(ctx context.Context, s *driver.Service) error {
				return s.ManageFunc(func() { released.Store(true) })
			},
			stop: func(*driver.Service) { panic(errors.New("stop exploded")) }}
	}}))
	for _, n := range []string{"n1", "n2"} {
		nub := e.r.NewNub("Nub", n, driver.Properties{})
		require.NoError(t, e.r.Publish(nil, nub))
		require.NoError(t, nub.TerminateSync(ctxT(t)), "termination carries on past a panicking Stop")
	}
	require.True(t, released.Load(), "resources released after a panicking Stop")
	e.quiet()
}
