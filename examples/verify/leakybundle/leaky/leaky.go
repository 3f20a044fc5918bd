// Package leaky is a driver bundle's driver with the seed bug of
// DESIGN.md's hot-plug SCSI kext, on purpose: its instance retains its
// provider with itself as the tag — the IOKit idiom provider->retain() —
// and never releases it. It runs out of process (examples/verify/leakybundle,
// driver/driverproc), where the daemon cannot see the reference: after an
// unplug, an unload or a terminate the driver answers stop, but its nub
// stays alive in the driver process.
//
// `drvctl verify examples/verify/leakybundle` finds it: the host asks the
// driver process to trace its references, the process reports what it left
// alive at stop, and the culprit is (*Driver).Start, on the line marked BUG.
// Fixed is the same driver with the release in Stop.
package leaky

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

// The driver's class, and the ids its personality matches on a HIDDevice
// nub (pid.codes' test ids).
const (
	Class     = "LeakyCounter"
	VendorID  = 0x1209
	ProductID = 0x0001
)

// Entry is the buggy driver (bundle "leakybundle"); Fixed the corrected one
// ("leakybundle-fixed").
var (
	Entry = entry("leakybundle", false)
	Fixed = entry("leakybundle-fixed", true)
)

func entry(name string, fixed bool) drivertable.Entry {
	return drivertable.Entry{
		Name: name, Summary: "counts calls, and keeps its provider",
		Personalities: func(*drivertable.Resources) ([]driver.Personality, error) {
			return []driver.Personality{{
				Name: name, Class: Class, ProviderClass: "HIDDevice",
				Match: []driver.Match{driver.MatchValue("idVendor", VendorID), driver.MatchValue("idProduct", ProductID)},
				New:   func() driver.Driver { return &Driver{fixed: fixed} },
			}}, nil
		},
	}
}

// Driver counts calls and keeps its provider for as long as it runs.
type Driver struct {
	fixed    bool
	provider *driver.Service
	count    *driver.Monitored[int]
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.ClientMethods = (*Driver)(nil)
)

// Start keeps the provider.
func (d *Driver) Start(_ context.Context, s *driver.Service) error {
	provs := s.Providers()
	if len(provs) == 0 {
		return errors.New("no provider nub")
	}
	d.provider = provs[0]
	d.count = driver.NewMonitored(nil, 0)
	d.provider.TaggedRetain(s) // BUG: retained with the instance as tag; only the fixed driver releases it
	return nil
}

// Stop: the fixed driver lets go of its provider.
func (d *Driver) Stop(s *driver.Service) {
	if d.fixed {
		d.provider.TaggedRelease(s)
	}
}

// Methods: "count" adds one and returns the count.
func (d *Driver) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		"count": func(context.Context, *driver.Service, []byte) ([]byte, error) {
			var n int
			d.count.Update(func(old int) int { n = old + 1; return n })
			return json.Marshal(n)
		},
	}
}
