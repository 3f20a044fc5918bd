package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// startDriver is a driver whose Start runs a function of the test.
type startDriver struct{ start func(*driver.Service) }

func (d startDriver) Start(_ context.Context, s *driver.Service) error { d.start(s); return nil }
func (startDriver) Stop(*driver.Service)                               {}

// stickRegistry is a registry with a USB interface that drv matches.
func stickRegistry(t *testing.T, drv func() driver.Driver) (*driver.Registry, *driver.Service) {
	t.Helper()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	rec := lifecycletest.Record(t, r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
		rec.Check(t)
	})
	require.NoError(t, r.RegisterPersonality(driver.Personality{
		Name: "usbstorage", Class: "USBMassStorage", ProviderClass: "USBInterface", New: drv,
	}))
	ifc := r.NewNub("USBInterface", "1-1:1.0", driver.NewProperties(map[string]any{"bInterfaceClass": 8}))
	require.NoError(t, r.Publish(nil, ifc))
	return r, ifc
}

// drvctl why for a driver one application holds open: one owning chain,
// from the application (pid, uid, command name) through its user client.
func TestWhyOneApplicationGolden(t *testing.T) {
	leaktest.Check(t)
	r, ifc := stickRegistry(t, func() driver.Driver { return nopDriver{} })
	drv := ifc.Clients()[0]
	sess, err := server.NewRegistryBackend(r).Open(context.Background(), drv.ID(), server.OpenRequest{
		Cred:   userclient.Cred{PID: 4242, UID: 1000, Comm: "scsiapp"},
		Notify: func(userclient.Notification) {},
	})
	require.NoError(t, err)
	defer sess.Close()

	why, err := adminWhy(r, idArgs{ID: drv.ID()})
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(why, " → "+drv.RefObject().String()), "exactly one chain:\n%s", why)
	require.Contains(t, why, `"userclient pid 4242 uid 1000 (scsiapp)" → UserClient#`)
	golden(t, "why-app.txt", []byte(normalizeReport(why)))
}

//go:noinline
func keepProvider(self *driver.Service) { self.Providers()[0].TaggedRetain(self) }

// The self-tag idiom: drvctl leaks and why name the driver's function, not
// the registry's attachment code.
func TestLeaksAndWhyNameTheSelfTagRetain(t *testing.T) {
	leaktest.Check(t)
	var inst *driver.Service
	r, ifc := stickRegistry(t, func() driver.Driver {
		return startDriver{start: func(s *driver.Service) { inst = s; keepProvider(s) }}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, ifc.TerminateSync(ctx), driver.ErrBlocked)
	<-inst.Done()

	blamed := `at drvctl\.keepProvider attrib_test\.go:\d+`
	out, err := adminLeaks(r, leaksArgs{Format: "text"})
	require.NoError(t, err)
	require.Regexp(t, blamed, string(out))
	require.NotContains(t, string(out), "attachLocked")
	js, err := adminLeaks(r, leaksArgs{Format: "json"})
	require.NoError(t, err)
	require.Contains(t, string(js), `"func": "github.com/drvkit/drvkit/cmd/drvctl.keepProvider"`)
	require.NotContains(t, string(js), "attachLocked")

	why, err := adminWhy(r, idArgs{ID: ifc.ID()})
	require.NoError(t, err)
	require.Regexp(t, `"USBMassStorage#\d+ \(freed\)" → USBInterface#\d+`, why)
	require.Regexp(t, `reference taken `+blamed, why)
	require.NotContains(t, why, "attachLocked")

	ifc.TaggedRelease(inst)
	<-ifc.Done()
}
