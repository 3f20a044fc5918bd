// Package counter is a small driver that needs no device: it counts the
// calls made to it, echoes, and notifies its clients. It runs in the
// daemon's process (its Entry in a driver table) or, unchanged, in the
// process of a driver bundle (examples/bundles/gocounter, built with
// driver/driverproc) — the tests of driver/host run it both ways.
package counter

import (
	"context"
	"encoding/json"
	"os"
	"sync"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

const (
	// Name is the driver's name (and the bundle's).
	Name = "gocounter"
	// Class is its instances' class.
	Class = "Counter"
	// VendorID and ProductID are what its personality matches on a
	// HIDDevice nub (pid.codes' test ids).
	VendorID  = 0x1209
	ProductID = 0x0001
	// MsgCount is the notification it sends its clients on "notify".
	MsgCount = driver.MessageDriverDefined + 1
)

// Entry is the driver's table entry.
var Entry = drivertable.Entry{
	Name:    Name,
	Summary: "counts calls; a sample driver that needs no device",
	Personalities: func(*drivertable.Resources) ([]driver.Personality, error) {
		return []driver.Personality{{
			Name: Name, Class: Class, ProviderClass: "HIDDevice",
			Match: []driver.Match{driver.MatchValue("idVendor", VendorID), driver.MatchValue("idProduct", ProductID)},
			New:   func() driver.Driver { return &Counter{} },
		}}, nil
	},
}

// Counter is the driver. Its count is a Monitored value: methods update it
// atomically and readers never lock.
type Counter struct {
	count       *driver.Monitored[int]
	methods     map[string]driver.Method // made once: Methods is asked on every call
	methodsOnce sync.Once
}

var (
	_ driver.Driver        = (*Counter)(nil)
	_ driver.ClientMethods = (*Counter)(nil)
)

// Start sets the count up from the nub's "start" property (0 if none).
func (c *Counter) Start(_ context.Context, s *driver.Service) error {
	n, _ := s.Properties().Int("start")
	c.count = driver.NewMonitored(nil, int(n))
	return nil
}

// Stop has nothing to release.
func (c *Counter) Stop(*driver.Service) {}

// Reply is what "count" returns.
type Reply struct {
	Count int `json:"count"`
	PID   int `json:"pid"` // the process the driver runs in
}

// Methods: "count" adds one and returns the count; "echo" returns its
// input; "notify" sends its input to every client as MsgCount; "wait"
// returns when cancelled.
func (c *Counter) Methods() map[string]driver.Method {
	c.methodsOnce.Do(func() { c.methods = c.makeMethods() })
	return c.methods
}

func (c *Counter) makeMethods() map[string]driver.Method {
	return map[string]driver.Method{
		"count": func(context.Context, *driver.Service, []byte) ([]byte, error) {
			var n int
			c.count.Update(func(old int) int { n = old + 1; return n })
			return json.Marshal(Reply{Count: n, PID: os.Getpid()})
		},
		"echo": func(_ context.Context, _ *driver.Service, in []byte) ([]byte, error) { return in, nil },
		"notify": func(_ context.Context, s *driver.Service, in []byte) ([]byte, error) {
			s.MessageClients(MsgCount, in)
			return nil, nil
		},
		"wait": func(ctx context.Context, _ *driver.Service, _ []byte) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}
}
