package usbtest

import "github.com/drvkit/drvkit/driver/usb/usbsim"

// The fake's types; see usbsim.
type (
	Backend        = usbsim.Backend
	Device         = usbsim.Device
	DeviceSpec     = usbsim.DeviceSpec
	InterfaceSpec  = usbsim.InterfaceSpec
	EndpointSpec   = usbsim.EndpointSpec
	Handler        = usbsim.Handler
	ControlHandler = usbsim.ControlHandler
	Setup          = usbsim.Setup
	SCSITarget     = usbsim.SCSITarget
	MassStorage    = usbsim.MassStorage
)

// Mass-storage endpoint addresses used by MassStorage.
const (
	MassStorageIn  = usbsim.MassStorageIn
	MassStorageOut = usbsim.MassStorageOut
)

// New returns an empty backend (usbsim.New).
func New() *Backend { return usbsim.New() }
