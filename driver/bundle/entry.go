package bundle

import (
	"context"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

// Entry is the bundle's entry of the driver table: origin Bundle, Source
// the manifest, one driver personality per manifest personality, all named
// m.Name (Unload takes them all). It takes no custom personalities: the
// manifest is where a bundle's matching is said.
//
// newDriver makes the driver of an instance: the out-of-process host's
// proxy (driver/host.Host.Entry passes it). Without one (nil), an instance
// that wins matching fails Start with ErrNotSupported, so that nothing
// pretends the driver runs, and the next candidate starts.
func (m *Manifest) Entry(newDriver func() driver.Driver) drivertable.Entry {
	if newDriver == nil {
		newDriver = func() driver.Driver { return unhosted{} }
	}
	return drivertable.Entry{
		Name:    m.Name,
		Summary: m.Summary,
		Origin:  drivertable.Bundle,
		Source:  m.Path,
		Personalities: func(*drivertable.Resources) ([]driver.Personality, error) {
			out := make([]driver.Personality, 0, len(m.Personalities))
			for _, p := range m.Personalities {
				match := make([]driver.Match, 0, len(p.Match))
				for _, mt := range p.Match {
					if mt.Mask != 0 {
						match = append(match, driver.MatchMasked(mt.Prop, mt.Value.(uint64), mt.Mask))
						continue
					}
					match = append(match, driver.MatchValue(mt.Prop, mt.Value))
				}
				out = append(out, driver.Personality{
					Name: m.Name, Class: p.Class, ProviderClass: p.ProviderClass,
					Match: match, Score: p.Score, Category: p.Category,
					New: newDriver,
				})
			}
			return out, nil
		},
	}
}

// unhosted is the driver of a bundle loaded without a host: it refuses to
// start, saying why.
type unhosted struct{}

var _ driver.Driver = unhosted{}

func (unhosted) Start(context.Context, *driver.Service) error { return ErrNotSupported }
func (unhosted) Stop(*driver.Service)                         {}
