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
// Until the out-of-process host exists, an instance that wins matching
// fails Start with ErrNotSupported (then the next candidate starts);
// failed, if not nil, is told of each such failure.
func (m *Manifest) Entry(failed func(error)) drivertable.Entry {
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
					New: func() driver.Driver { return &unhosted{failed: failed} },
				})
			}
			return out, nil
		},
	}
}

// unhosted stands for the proxy to the driver's process: it refuses to
// start, saying why, so that nothing pretends the driver runs.
type unhosted struct{ failed func(error) }

var _ driver.Driver = (*unhosted)(nil)

func (u *unhosted) Start(context.Context, *driver.Service) error {
	if u.failed != nil {
		u.failed(ErrNotSupported)
	}
	return ErrNotSupported
}

func (u *unhosted) Stop(*driver.Service) {}
