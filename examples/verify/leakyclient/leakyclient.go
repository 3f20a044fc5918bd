// Package leakyclient is the seed bug of DESIGN.md's hot-plug SCSI kext,
// on purpose: a SCSI disk driver publishes a user client for applications,
// and the user client retains its provider with itself as the tag — the
// IOKit idiom provider->retain() — and never releases it. After an unplug,
// an unload or an application crash the driver is stopped and detached but
// never freed.
//
// `go test ./examples/verify/leakyclient` shows the Driver Verifier
// finding it: the culprit is (*UserClient).attach, on the line marked BUG,
// with a replay command. Fixed is the same driver with the release.
package leakyclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdrv"
	"github.com/drvkit/drvkit/driver/scsi/sg"
)

// Classes of the driver and of its user client.
const (
	Class           = "KextDisk"
	UserClientClass = "KextUserClient"
)

// Entry is the buggy driver's table entry; Fixed is the corrected one.
var (
	Entry = entry("leakyclient", false)
	Fixed = entry("leakyclient-fixed", true)
)

func entry(name string, fixed bool) drivertable.Entry {
	return drivertable.Entry{
		Name: name, Summary: "a SCSI disk driver whose user client retains its provider", Needs: []string{sg.OpenerKey.Name()},
		Personalities: func(r *drivertable.Resources) ([]driver.Personality, error) {
			open, err := sg.OpenerKey.From(r)
			if err != nil {
				return nil, err
			}
			return []driver.Personality{{Name: name, Class: Class, ProviderClass: sg.NubClass,
				Match: []driver.Match{driver.MatchFunc(func(p driver.Properties) bool {
					n, ok := p.String(sg.PropSGNode)
					return ok && n != ""
				})},
				New: func() driver.Driver {
					d := &Driver{open: open, fixed: fixed}
					d.methods = blockdrv.Methods(func(*driver.Service) *scsi.Device { return d.dev.Load() })
					return d
				}}}, nil
		},
	}
}

// Driver drives the disk and publishes a user client under itself.
type Driver struct {
	open    sg.Opener
	fixed   bool
	dev     atomic.Pointer[scsi.Device]
	methods map[string]driver.Method
}

var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.ClientMethods  = (*Driver)(nil)
	_ driver.MessageHandler = (*UserClient)(nil)
)

// Start opens the sg node and publishes the user client.
func (d *Driver) Start(ctx context.Context, s *driver.Service) error {
	provs := s.Providers()
	if len(provs) == 0 {
		return errors.New("no provider nub")
	}
	node, _ := provs[0].Properties().String(sg.PropSGNode)
	t, err := d.open(node)
	if err != nil {
		return err
	}
	dev := scsi.NewDevice(t)
	if err := s.Manage(dev); err != nil {
		return err
	}
	d.dev.Store(dev)
	uc := &UserClient{fixed: d.fixed}
	self, err := s.Registry().AttachClient(s, UserClientClass, "kext-uc", uc)
	if err != nil {
		return fmt.Errorf("publish user client: %w", err)
	}
	uc.attach(s, self)
	return nil
}

// Stop forgets the device; the managed transport closes after.
func (d *Driver) Stop(*driver.Service) { d.dev.Store(nil) }

// Methods are the block methods (read, write, inquiry, capacity).
func (d *Driver) Methods() map[string]driver.Method { return d.methods }

// UserClient is what applications would talk to.
type UserClient struct {
	fixed    bool
	provider *driver.Service
	released atomic.Bool
}

// attach keeps the provider for as long as the user client lives.
func (uc *UserClient) attach(provider, self *driver.Service) {
	uc.provider = provider
	provider.TaggedRetain(self) // BUG: retained with itself as tag, never released
	if !uc.fixed {
		leaked.Store(uc, self)
	}
}

// leaked remembers the buggy references so a test that shows the leak can
// end clean (ReleaseLeaked).
var leaked sync.Map // *UserClient → its own service

// ReleaseLeaked drops every reference the buggy user clients kept, as
// the fixed one does: for tests that show the leak, then must leave
// nothing behind.
func ReleaseLeaked() {
	leaked.Range(func(k, v any) bool {
		uc := k.(*UserClient)
		if !uc.released.Swap(true) {
			uc.provider.TaggedRelease(v.(*driver.Service))
		}
		leaked.Delete(k)
		return true
	})
}

// Message: the fixed user client lets go of its provider when the
// provider is terminated (the buggy one waits for a release that never
// comes).
func (uc *UserClient) Message(self *driver.Service, m driver.Message) error {
	if uc.fixed && m.Type == driver.ServiceIsTerminated && m.From == uc.provider.ID() && !uc.released.Swap(true) {
		uc.provider.TaggedRelease(self)
	}
	return nil
}
