package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"

	"github.com/drvkit/drvkit/userclient"
)

// driverMsg is the driver-defined message the test devices send.
const driverMsg = driver.MessageDriverDefined + 1

var driverMsgType = userclient.NotificationType(driverMsg.String())

// testDriver is a driver whose instances user clients call. Its method
// table is made once, as real drivers keep theirs (usbstorage, sg): the
// registry asks for it on every call.
type testDriver struct {
	reg     *testRegistry
	methods map[string]driver.Method
}

func (d *testDriver) Start(context.Context, *driver.Service) error { return nil }
func (d *testDriver) Stop(*driver.Service)                         {}

func newTestDriver(tr *testRegistry) testDriver {
	d := testDriver{reg: tr}
	d.methods = d.makeMethods()
	return d
}

func (d *testDriver) Methods() map[string]driver.Method { return d.methods }

func (d *testDriver) makeMethods() map[string]driver.Method {
	return map[string]driver.Method{
		"echo": func(_ context.Context, _ *driver.Service, in []byte) ([]byte, error) { return in, nil },
		"block": func(ctx context.Context, _ *driver.Service, _ []byte) ([]byte, error) {
			d.reg.entered <- "block"
			<-ctx.Done()
			select { // what the method saw, for the cancel tests
			case d.reg.left <- ctx.Err():
			default:
			}
			return nil, ctx.Err()
		},
		"fail": func(context.Context, *driver.Service, []byte) ([]byte, error) {
			return nil, errors.New("the device said no")
		},
		"vanish": func(context.Context, *driver.Service, []byte) ([]byte, error) {
			return nil, fmt.Errorf("%w: usb: bulk transfer: no device", driver.ErrNoDevice)
		},
	}
}

// testRegistry is a real driver.Registry with a recorder and what the tests
// observe: when each user client was freed, whom each device saw close.
type testRegistry struct {
	r       *driver.Registry
	rec     *lifecycletest.Recorder
	entered chan string
	left    chan error // ctx.Err() as each "block" call saw it end

	mu       sync.Mutex
	freedAt  map[uint64]time.Time
	closedBy map[uint64]bool // user-client IDs that closed a device
	wake     chan struct{}
	classes  map[string]bool
}

func newTestRegistry(t testing.TB) *testRegistry {
	r := driver.NewRegistry()
	tr := &testRegistry{r: r, entered: make(chan string, 4096), left: make(chan error, 4096), freedAt: map[uint64]time.Time{},
		closedBy: map[uint64]bool{}, wake: make(chan struct{}, 1), classes: map[string]bool{}}
	tr.rec = lifecycletest.Record(t, r)
	cancel := r.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		if e.Step == driver.StepFree && e.Class == UserClientClass {
			tr.mu.Lock()
			tr.freedAt[e.ServiceID] = e.Time
			tr.mu.Unlock()
			select {
			case tr.wake <- struct{}{}:
			default:
			}
		}
	})
	t.Cleanup(cancel)
	return tr
}

// testDevice is a driver instance on a published nub: unplug is the nub's
// termination.
type testDevice struct {
	*driver.Service
	nub *driver.Service
	reg *testRegistry
}

// publish plugs a device whose driver instance has class class.
func (tr *testRegistry) publish(t testing.TB, class, name string) *testDevice {
	t.Helper()
	if !tr.classes[class] {
		tr.classes[class] = true
		require.NoError(t, tr.r.RegisterPersonality(driver.Personality{
			Name: class[:len(class)-len("Device")] + "Driver", Class: class, ProviderClass: class + "Nub",
			New: func() driver.Driver { d := newTestDriver(tr); return &d },
		}))
	}
	nub := tr.r.NewNub(class+"Nub", name, driver.NewProperties(map[string]any{"serial": name}))
	require.NoError(t, tr.r.Publish(nil, nub))
	cs := nub.Clients()
	require.Len(t, cs, 1, "driver did not match")
	dev := &testDevice{Service: cs[0], nub: nub, reg: tr}
	dev.AddInterest(func(m driver.Message) {
		if m.Type == driver.ServiceWasClosed {
			tr.mu.Lock()
			tr.closedBy[m.From] = true
			tr.mu.Unlock()
		}
	})
	return dev
}

// terminate unplugs the device; the channel is closed when the nub, the
// driver instance and every user client are freed.
func (d *testDevice) terminate() <-chan struct{} {
	done := make(chan struct{})
	d.nub.Terminate()
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = d.nub.TerminateSync(ctx)
	}()
	return done
}

// message sends a driver-defined message to every client of the device.
func (d *testDevice) message(data []byte) { d.MessageClients(driverMsg, data) }

func (tr *testRegistry) liveClients() int {
	n := 0
	for _, s := range tr.r.Services() {
		if s.Class() == UserClientClass {
			n++
		}
	}
	return n
}

// recorded reports whether the recorder has seen step of service id.
func (tr *testRegistry) recorded(id uint64, step driver.Step) bool {
	for _, e := range tr.rec.Events() {
		if e.ServiceID == id && e.Step == step {
			return true
		}
	}
	return false
}

// waitFreed waits for user client id to be freed and returns when it was.
func (tr *testRegistry) waitFreed(t testing.TB, id uint64) time.Time {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		tr.mu.Lock()
		at, ok := tr.freedAt[id]
		tr.mu.Unlock()
		// Lifecycle subscribers are called one after the other for each
		// event, in no fixed order: freedAt can be set before the
		// recorder has the same free, and checkTrace then missed it
		// (TestForkChildExits failed so under load).
		if ok && tr.recorded(id, driver.StepFree) {
			return at
		}
		select {
		case <-tr.wake:
		case <-time.After(50 * time.Millisecond): // wake is lossy when several wait
		case <-deadline:
			t.Fatalf("user client %d not freed; steps:\n%v", id, tr.rec.Steps())
		}
	}
}

// checkTrace: user client id was attached, closed its device, terminated,
// stopped, detached and freed, in that order and once each; the whole trace
// so far keeps the termination contract.
func (tr *testRegistry) checkTrace(t testing.TB, id uint64) {
	t.Helper()
	tr.rec.CheckPartial(t)
	var steps []driver.Step
	for _, e := range tr.rec.Events() {
		if e.ServiceID == id {
			steps = append(steps, e.Step)
		}
	}
	require.Equal(t, []driver.Step{driver.StepAttach, driver.StepTerminate, driver.StepWillTerminate,
		driver.StepDidTerminate, driver.StepDetach, driver.StepFree}, dropSteps(steps, driver.StepStop),
		"lifecycle of user client %d: %v", id, steps)
	require.Eventually(t, func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.closedBy[id]
	}, 10*time.Second, time.Millisecond, "the device never saw user client %d close it", id)
}

// dropSteps removes steps a handler without Stop may or may not emit.
func dropSteps(steps []driver.Step, drop driver.Step) []driver.Step {
	out := steps[:0:0]
	for _, s := range steps {
		if s != drop {
			out = append(out, s)
		}
	}
	return out
}

// checkClean closes the registry: everything must be freed, the complete
// trace must keep the contract.
func (tr *testRegistry) checkClean(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, tr.r.Close(ctx))
	require.Empty(t, tr.r.Services(), "services left after Close")
	tr.rec.Check(t)
}

func (tr *testRegistry) String() string { return fmt.Sprint(tr.rec.Steps()) }
