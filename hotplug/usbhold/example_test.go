package usbhold_test

import (
	"os"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug/usbhold"
)

// What a daemon with usbstorage's class match and an operator's
// personality for one product keeps from the kernel's drivers; sg drives
// SCSI devices, not USB interfaces, and holds nothing.
func ExampleRules() {
	ps := []driver.Personality{
		{Name: "usbstorage", ProviderClass: "USBInterface", Match: []driver.Match{
			driver.MatchValue("bInterfaceClass", 0x08), driver.MatchValue("bInterfaceSubClass", 0x06), driver.MatchValue("bInterfaceProtocol", 0x50)}},
		{Name: "gadget", ProviderClass: "USBInterface", Score: 100, Match: []driver.Match{
			driver.MatchValue("idVendor", 0x1d50), driver.MatchMasked("idProduct", 0x6000, 0xff00)}},
		{Name: "sg", ProviderClass: "SCSIDevice"},
	}
	_ = usbhold.WriteRules(os.Stdout, usbhold.Rules(ps))
	// Output:
	// usbstorage score=0: bInterfaceClass=0x08 bInterfaceSubClass=0x06 bInterfaceProtocol=0x50
	// gadget score=100: idVendor=0x1d50 idProduct=0x6000/0xff00
}
