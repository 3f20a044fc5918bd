package hotplug_test

import (
	"context"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// TestBridgeRemoveCause: however the bridge learns that a device is gone —
// its remove, its parent's remove, another device at its path — the nub is
// terminated with driver.CauseUnplug, and the driver on it, its interest
// listeners and the trace see that cause (the driver itself, reached by
// cascade, has CauseProviderTerminated with root cause unplug).
func TestBridgeRemoveCause(t *testing.T) {
	const dev = "/devices/pci0000:00/0000:00:02.0/usb2/2-1"
	const ifc = dev + "/2-1:1.0"
	ifcEnv := []string{"DEVTYPE=usb_interface", "PRODUCT=1234/5678/100", "TYPE=0/0/0", ifaceEnv}
	for _, tc := range []struct {
		name   string
		remove func(t *testing.T, b *hotplug.Bridge)
	}{
		{"interface then device removed", func(t *testing.T, b *hotplug.Bridge) {
			b.Handle(mustEvent(t, hotplug.ActionRemove, ifc, "usb", ifcEnv...))
			b.Handle(mustEvent(t, hotplug.ActionRemove, dev, "usb", usbDevEnv(2)...))
		}},
		{"device removed first", func(t *testing.T, b *hotplug.Bridge) {
			b.Handle(mustEvent(t, hotplug.ActionRemove, dev, "usb", usbDevEnv(2)...))
		}},
		{"replaced at the same path", func(t *testing.T, b *hotplug.Bridge) {
			b.Handle(mustEvent(t, hotplug.ActionAdd, dev, "usb", usbDevEnv(3)...))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaktest.Check(t)
			r, rec := newRegistry(t)
			var mu sync.Mutex
			var got []string
			names := map[uint64]string{}
			note := func(who string, m driver.Message) {
				if m.Type != driver.ServiceIsTerminated && m.Type != driver.ServiceIsRequestingClose {
					return
				}
				mu.Lock()
				got = append(got, who+": "+m.Type.String()+" "+names[m.From]+" "+m.Cause.Text()+"/"+m.RootCause.Text())
				mu.Unlock()
			}
			started := make(chan *driver.Service, 1)
			require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "hid", ProviderClass: usbbus.ClassInterface,
				Match: []driver.Match{driver.MatchValue(usbbus.PropIfaceClass, 3)},
				New: func() driver.Driver {
					return &causeDriver{started: started, note: func(m driver.Message) { note("hid.Message", m) }}
				}}))
			b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: t.TempDir()})
			defer b.Close()
			b.Handle(mustEvent(t, hotplug.ActionAdd, dev, "usb", usbDevEnv(2)...))
			b.Handle(mustEvent(t, hotplug.ActionAdd, ifc, "usb", ifcEnv...))
			require.NoError(t, b.Flush(ctxT(t)))
			hid := <-started
			nub := hid.Providers()[0]
			mu.Lock()
			names[nub.ID()], names[hid.ID()] = "2-1:1.0", "hid"
			mu.Unlock()
			nub.AddInterest(func(m driver.Message) { note("nub.interest", m) })
			hid.AddInterest(func(m driver.Message) { note("hid.interest", m) })

			tc.remove(t, b)
			require.NoError(t, b.Flush(ctxT(t)))
			require.NoError(t, r.WaitQuiet(ctxT(t)))

			mu.Lock()
			sort.Strings(got)
			require.Equal(t, []string{
				"hid.Message: ServiceIsTerminated 2-1:1.0 unplug/unplug",
				"hid.interest: ServiceIsTerminated hid provider/unplug",
				"nub.interest: ServiceIsTerminated 2-1:1.0 unplug/unplug",
			}, got)
			mu.Unlock()
			terms := map[string]string{}
			for _, ev := range rec.Events() {
				if ev.Step == driver.StepTerminate {
					terms[ev.Name] = ev.Cause.Text() + "/" + ev.RootCause.Text()
				}
			}
			require.Equal(t, map[string]string{"2-1": "unplug/unplug", "2-1:1.0": "unplug/unplug", "hid": "provider/unplug"}, terms)
			rec.CheckPartial(t)
		})
	}
}

// causeDriver reports its start and passes its messages on.
type causeDriver struct {
	started chan<- *driver.Service
	note    func(driver.Message)
}

func (d *causeDriver) Start(ctx context.Context, s *driver.Service) error {
	d.started <- s
	return nil
}
func (d *causeDriver) Stop(s *driver.Service) {}
func (d *causeDriver) Message(s *driver.Service, m driver.Message) error {
	d.note(m)
	return nil
}
