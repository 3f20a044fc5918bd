// Package sharedfixture is a test package in the most common CI shape: one
// registry, hotplug bridge and simulator built in TestMain, and parallel
// tests that each plug their own device. TestLeaky's driver keeps its
// provider; TestClean's does not. Run by leaktest's TestSharedFixture:
// exactly TestLeaky must fail, naming the line of keepProvider.
package sharedfixture

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

var fx struct {
	r      *driver.Registry
	sim    *sim.Sim
	bridge *hotplug.Bridge
	cancel context.CancelFunc
	done   chan struct{}
}

type keeper struct{ leak bool }

func (k keeper) Start(_ context.Context, s *driver.Service) error {
	if k.leak {
		keepProvider(s)
	}
	return nil
}

func (keeper) Stop(*driver.Service) {}

func keepProvider(self *driver.Service) {
	self.Providers()[0].TaggedRetain(self) // LEAK: never released
}

func personality(name string, vid uint64, leak bool) driver.Personality {
	return driver.Personality{
		Name: name, Class: name, ProviderClass: usbbus.ClassInterface,
		Match: []driver.Match{driver.MatchValue(usbbus.PropVendorID, vid)},
		New:   func() driver.Driver { return keeper{leak: leak} },
	}
}

func setup() {
	fx.r = driver.NewRegistry(driver.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	must(fx.r.RegisterPersonality(personality("CleanDriver", 0x1111, false)))
	must(fx.r.RegisterPersonality(personality("LeakyDriver", 0x2222, true)))
	sc, err := sim.ParseScenarioString("boot", "")
	must(err)
	fx.sim, err = sim.New(sc, sim.Config{Live: true})
	must(err)
	fx.bridge = hotplug.NewBridge(fx.r, hotplug.BridgeConfig{Buses: buses.Default()})
	var ctx context.Context
	ctx, fx.cancel = context.WithCancel(context.Background())
	fx.done = make(chan struct{})
	go func() {
		defer close(fx.done)
		_ = fx.bridge.Run(ctx, fx.sim)
	}()
}

func teardown() {
	fx.cancel()
	<-fx.done
	must(fx.bridge.Close())
	must(fx.sim.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = fx.r.Close(ctx) // blocked by TestLeaky's leak, which already failed
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func TestMain(m *testing.M) {
	leaktest.Main(m, leaktest.Setup(setup), leaktest.Teardown(teardown))
}

// plugAndUnplug plugs a device on port, waits for its driver, unplugs it.
func plugAndUnplug(t *testing.T, port string, vid int) {
	ctx := leaktest.Context(t) // fixture work done for t carries its label
	inject := func(step string) {
		frag, err := sim.ParseScenarioFragment(t.Name(), step)
		if err != nil {
			t.Fatal(err)
		}
		if err := fx.sim.Inject(ctx, frag); err != nil {
			t.Fatal(err)
		}
		if err := fx.bridge.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	inject(fmt.Sprintf("plug usb %s vid=%04x pid=0001 serial=%s ifaces=08/06/50\n", port, vid, t.Name()))
	inject("unplug " + port + "\n")
}

func TestClean(t *testing.T) {
	t.Parallel()
	leaktest.Check(t, leaktest.Timeout(2*time.Second))
	plugAndUnplug(t, "1-1", 0x1111)
}

func TestLeaky(t *testing.T) {
	t.Parallel()
	leaktest.Check(t, leaktest.Timeout(2*time.Second))
	plugAndUnplug(t, "1-2", 0x2222)
}
