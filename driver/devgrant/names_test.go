package devgrant

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/hotplug/hidbus"
)

// devgrant names the nub properties and resources the bus adapters and
// the sample drivers use without importing them (a driver process need not
// link them): they must agree.
func TestNamesAgree(t *testing.T) {
	require.Equal(t, hidbus.PropHidraw, propHidraw)
	require.Equal(t, hidkbd.NubClass, HIDProviderClass)
	require.Equal(t, hidkbd.BackendKey.Name(), HIDKey.Name())
	require.Equal(t, usbstorage.NubClass, USBProviderClass)
	require.Equal(t, usbstorage.BackendKey.Name(), USBKey.Name())
	require.Equal(t, usbstorage.PropBusNum, propBusNum)
	require.Equal(t, usbstorage.PropDevNum, propDevNum)
	require.Equal(t, usbstorage.PropInterfaceNumber, propInterface)
}
