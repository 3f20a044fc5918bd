package driverproc

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/host/wire"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

type nopDriver struct{}

func (nopDriver) Start(context.Context, *driver.Service) error { return nil }
func (nopDriver) Stop(*driver.Service)                         {}

// The start message's providers become the local nub's providers, with
// their properties and types, attached but never published: a personality
// on their class is not matched against them — only the nub is the
// driver's — and the registry's close frees them.
func TestMirrorProviders(t *testing.T) {
	leaktest.Check(t)
	reg := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	rec := lifecycletest.Record(t, reg)
	for _, class := range []string{"USBDevice", "USBHub", "USBInterface"} {
		require.NoError(t, reg.RegisterPersonality(driver.Personality{Name: "p-" + class, ProviderClass: class,
			New: func() driver.Driver { return nopDriver{} }}))
	}
	vals, types := wire.EncodeProperties(map[string]any{"busnum": 2, "devnum": 7, "idVendor": uint16(0x46f4)})
	provs := []wire.Nub{
		{ID: 40, Class: "USBDevice", Name: "2-1", Properties: vals, Types: types},
		{ID: 3, Class: "USBHub", Name: "usb2", Properties: map[string]json.RawMessage{"speed": json.RawMessage(`"480"`)}},
	}
	above, err := mirrorProviders(reg, provs)
	require.NoError(t, err)
	nub := reg.NewNub("USBInterface", "2-1:1.0", driver.NewProperties(map[string]any{"bInterfaceNumber": 0}))
	require.NoError(t, reg.Publish(above, nub))

	p := nub.Providers()
	require.Len(t, p, 1)
	require.Equal(t, "USBDevice", p[0].Class())
	require.Equal(t, "2-1", p[0].Name())
	bus, ok := p[0].Properties().Int("busnum")
	require.True(t, ok)
	require.Equal(t, int64(2), bus)
	require.Equal(t, uint16(0x46f4), p[0].Properties().Map()["idVendor"], "the type travels")
	pp := p[0].Providers()
	require.Len(t, pp, 1)
	require.Equal(t, "usb2", pp[0].Name())
	require.Empty(t, pp[0].Providers())

	require.Eventually(t, func() bool { return len(nub.Clients()) == 1 }, 5*time.Second, time.Millisecond, "the nub is matched")
	require.Len(t, p[0].Clients(), 1, "the device mirror's only client is the nub: never matched")
	require.Len(t, pp[0].Clients(), 1)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, reg.Close(ctx))
	rec.Check(t)

	// A property its type does not fit: refused, nothing made.
	reg2 := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	_, err = mirrorProviders(reg2, []wire.Nub{{Class: "USBDevice", Properties: map[string]json.RawMessage{"busnum": json.RawMessage(`"x"`)}, Types: map[string]string{"busnum": "int"}}})
	require.ErrorIs(t, err, wire.ErrMalformed)
	require.NoError(t, reg2.Close(ctx))

	// None (a 1.1 daemon): the nub goes under the root.
	above, err = mirrorProviders(reg2, nil)
	require.NoError(t, err)
	require.Nil(t, above)
}
