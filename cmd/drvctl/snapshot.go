package main

import (
	"sort"

	"github.com/drvkit/drvkit/driver"
)

// inspectRegistry snapshots every live service of r. Each service is read
// on its own, so a tree taken while devices come and go may show a service
// whose provider has just been freed; the renderer then draws it as a root.
func inspectRegistry(r *driver.Registry) inspectDoc {
	services := r.Services()
	doc := inspectDoc{SchemaVersion: inspectSchemaVersion, Services: make([]serviceEntry, 0, len(services))}
	for _, s := range services {
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
		}
		doc.Services = append(doc.Services, e)
	}
	sort.Slice(doc.Services, func(i, j int) bool { return doc.Services[i].ID < doc.Services[j].ID })
	doc.normalize()
	return doc
}

func ids(ss []*driver.Service) []uint64 {
	out := make([]uint64, len(ss))
	for i, s := range ss {
		out[i] = s.ID()
	}
	return out
}
