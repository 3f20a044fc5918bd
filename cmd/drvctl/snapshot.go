package main

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"slices"

	"github.com/drvkit/drvkit/userclient/server"

	"github.com/drvkit/drvkit/driver"
)

// inspectRegistry snapshots every live service of r. Each service is read
// on its own, so a tree taken while devices come and go may show a service
// whose provider has just been freed; the renderer then draws it as a root.
func inspectRegistry(r *driver.Registry) inspectDoc {
	services := sortedServices(r)
	doc := inspectDoc{SchemaVersion: inspectSchemaVersion, Services: make([]serviceEntry, 0, len(services))}
	for _, s := range services {
		doc.Services = append(doc.Services, entryOf(s))
	}
	doc.normalize()
	return doc
}

// sortedServices is every live service of r by ID.
func sortedServices(r *driver.Registry) []*driver.Service {
	services := r.Services()
	slices.SortFunc(services, func(a, b *driver.Service) int { return cmp.Compare(a.ID(), b.ID()) })
	return services
}

// entryOf reads one service, normalized.
func entryOf(s *driver.Service) serviceEntry {
	st := s.State()
	e := serviceEntry{
		ID:         s.ID(),
		Class:      s.Class(),
		Name:       s.Name(),
		Registered: st.Registered,
		Matched:    st.Matched,
		Active:     st.Active,
		Starting:   st.Active && !st.Started,
		Busy:       st.Busy,
		Retain:     st.Refs,
		Providers:  ids(s.Providers()),
		Clients:    ids(s.Clients()),
		OpenBy:     ids(s.Openers()),
		Properties: s.Properties().Map(),
	}
	if p := s.Personality(); p != nil {
		e.Driver = p.Name
		e.Properties = driverProperties(s, p)
	}
	if len(e.Properties) == 0 {
		e.Properties = nil
	}
	return e
}

// inspectStream is the inspect reply written service by service, so that
// the daemon holds one service's JSON at a time, not the registry's
// (server.StreamedResult). It encodes what inspectRegistry would.
type inspectStream struct {
	services []*driver.Service // selected, by ID
	v        viewer
}

var _ server.StreamedResult = inspectStream{}

func (is inspectStream) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	// Compact, byte for byte what json.Marshal of the whole document
	// gives: drvctl inspect -o json prints it as it comes.
	var one []byte
	fmt.Fprintf(bw, `{"schema_version":%d,"services":[`, inspectSchemaVersion)
	for i, s := range is.services {
		if i > 0 {
			bw.WriteByte(',')
		}
		e := entryOf(s)
		is.v.entry(&e)
		one = appendEntry(one[:0], &e)
		if _, err := bw.Write(one); err != nil {
			return err
		}
	}
	bw.WriteString("]}")
	return bw.Flush()
}

func ids(ss []*driver.Service) []uint64 {
	out := make([]uint64, len(ss))
	for i, s := range ss {
		out[i] = s.ID()
	}
	return out
}

// driverProperties are a driver instance's own properties, as ioreg shows
// IOProbeScore and IOProviderClass — not the copy of its nub's it was
// matched on.
func driverProperties(s *driver.Service, p *driver.Personality) map[string]any {
	m := map[string]any{propPersonality: p.Name, propProbeScore: int64(p.Score)}
	if ps := s.Providers(); len(ps) > 0 {
		m[propProviderClass] = ps[0].Class()
	} else if p.ProviderClass != "" {
		m[propProviderClass] = p.ProviderClass
	}
	if p.Category != "" {
		m[propCategory] = p.Category
	}
	return m
}
