package driverproc

import (
	"fmt"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/host/wire"
)

// mirrorProviders builds, in the local registry, the nub's providers as
// the start message lists them (protocol 1.2, nearest first) and returns
// the nearest, under which the nub is published; nil when there are none
// (a 1.1 daemon). They are attached to one another but never published —
// IOKit's attach without registerService — so that no personality is
// matched against them: only the nub is the driver's to match. The
// registry's close terminates them with everything else.
func mirrorProviders(reg *driver.Registry, provs []wire.Nub) (*driver.Service, error) {
	var above *driver.Service
	for i := len(provs) - 1; i >= 0; i-- {
		props, err := wire.DecodeProperties(&provs[i])
		if err != nil {
			return nil, fmt.Errorf("provider %d: %w", i, err)
		}
		n := reg.NewNub(provs[i].Class, provs[i].Name, driver.NewProperties(props))
		if above != nil {
			if err := reg.AttachProvider(n, above); err != nil {
				n.Terminate()
				return nil, fmt.Errorf("provider %s: %w", provs[i].Name, err)
			}
		}
		above = n
	}
	return above, nil
}
