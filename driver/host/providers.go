package host

import (
	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/host/wire"
)

// providerChain is what a start message says of the nub's providers
// (protocol 1.2): each one's first provider, nearest first, up to the
// registry's root, at most wire.MaxProviders. A driver reads properties
// above its nub as an in-process one does (usbstorage: a USB interface's
// bus and device numbers are on the USB device).
func providerChain(nub *driver.Service) []wire.Nub {
	root := nub.Registry().Root()
	var out []wire.Nub
	for n := nub; len(out) < wire.MaxProviders; {
		provs := n.Providers()
		if len(provs) == 0 || provs[0] == root {
			break
		}
		n = provs[0]
		vals, types := wire.EncodeProperties(n.Properties().Map())
		out = append(out, wire.Nub{ID: n.ID(), Class: n.Class(), Name: n.Name(), Properties: vals, Types: types})
	}
	return out
}
