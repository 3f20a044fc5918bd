package devgrant

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

func TestRegisterRefusesDuplicatesAndIncomplete(t *testing.T) {
	grant := func(context.Context, *drivertable.Resources, *driver.Service) ([]File, func() error, error) {
		return nil, nil, nil
	}
	provide := func(*drivertable.Resources, []Received) {}
	require.Panics(t, func() {
		Register(Class{ProviderClass: HIDProviderClass, Resource: "other", Grant: grant, Provide: provide})
	})
	require.Panics(t, func() {
		Register(Class{ProviderClass: "Other", Resource: HIDKey.Name(), Grant: grant, Provide: provide})
	})
	require.Panics(t, func() { Register(Class{ProviderClass: "Other", Resource: "other"}) })
	require.Equal(t, []string{"HIDDevice", "SCSIDevice", "USBInterface"}, Classes(), "nothing half-registered")
}

// Files of a resource nobody provides are left out; the others are
// provided whatever the order.
func TestResourcesByName(t *testing.T) {
	r := Resources([]Received{
		{Resource: "teleporter", Node: "/dev/tp0", Kind: "tp"},
		{Resource: "sg", Node: "/dev/sg1", Kind: KindSGSocket},
		{Resource: "hidraw", Node: "/dev/hidraw0", Kind: KindHIDSocket},
		{Resource: "hidraw", Node: "/dev/hidraw1", Kind: KindHIDSocket},
	})
	require.Equal(t, []string{"hidraw", "sg"}, r.Names())
	b, err := HIDKey.From(r)
	require.NoError(t, err)
	require.Len(t, b.(*hidBackend).files, 2)
	// A kind this version does not know is refused at open, by name.
	r = Resources([]Received{{Resource: "hidraw", Node: "/dev/hidraw0", Kind: "hidraw-v9"}})
	b, err = HIDKey.From(r)
	require.NoError(t, err)
	_, err = b.Open("/dev/hidraw0")
	require.ErrorIs(t, err, ErrNotGranted)
	require.Equal(t, `open /dev/hidraw0: device not granted to this driver: kind "hidraw-v9"`, err.Error())
}
