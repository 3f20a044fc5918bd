package explorer

import (
	"bytes"
	"fmt"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
)

// The JSON the page reads. Keys are stable snake_case, slices are [] rather
// than null.

const schemaVersion = 1

// Node is one service in the tree.
type Node struct {
	ID        uint64   `json:"id"`
	Class     string   `json:"class"`
	Name      string   `json:"name"`
	Driver    string   `json:"driver"` // personality; "" for nubs and user clients
	State     string   `json:"state"`  // starting, active, terminating, stopped (or freed, for a detail)
	Retain    int      `json:"retain"`
	Busy      int      `json:"busy"`
	Providers []uint64 `json:"providers"`
	Clients   []uint64 `json:"clients"`
	OpenBy    []uint64 `json:"open_by"`
}

type tree struct {
	SchemaVersion int    `json:"schema_version"`
	Seq           uint64 `json:"seq"` // the tree reflects at least every step up to Seq
	Services      []Node `json:"services"`
}

type holder struct {
	Service string   `json:"service"`
	What    string   `json:"what"`
	Stacks  []string `json:"stacks"`
}

type serviceDetail struct {
	Node
	Freed      bool           `json:"freed"`
	Traced     bool           `json:"traced"`
	Registered bool           `json:"registered"`
	Matched    bool           `json:"matched"`
	Properties map[string]any `json:"properties"`
	Holders    []holder       `json:"holders"` // what keeps it from being freed (terminated services)
	Why        []string       `json:"why"`     // why-alive chains, when traced
	Timeline   []event        `json:"timeline"`
}

// event is one lifecycle step as the page gets it.
type event struct {
	Seq      uint64  `json:"seq"`
	TimeMS   float64 `json:"time_ms"` // Unix milliseconds: the page measures its own delay against it
	Step     string  `json:"step"`
	ID       uint64  `json:"id"`
	Class    string  `json:"class"`
	Name     string  `json:"name"`
	Provider uint64  `json:"provider,omitempty"`
	Score    int     `json:"score,omitempty"`
	Err      string  `json:"err,omitempty"`
}

type timeline struct {
	Seq    uint64  `json:"seq"`
	Events []event `json:"events"`
}

type leaks struct {
	Objects int              `json:"objects"`
	Text    string           `json:"text"`
	Report  *refcount.Report `json:"report"`
}

func eventOf(ev driver.LifecycleEvent) event {
	return event{Seq: ev.Seq, TimeMS: float64(ev.Time.UnixNano()) / 1e6, Step: ev.Step.String(), ID: ev.ServiceID,
		Class: ev.Class, Name: ev.Name, Provider: ev.ProviderID, Score: ev.Score, Err: ev.Err}
}

func eventsOf(evs []driver.LifecycleEvent) []event {
	out := make([]event, len(evs))
	for i, ev := range evs {
		out[i] = eventOf(ev)
	}
	return out
}

func stateOf(st driver.State) string {
	switch {
	case st.Active && !st.Started:
		return "starting"
	case st.Active:
		return "active"
	case !st.Stopped:
		return "terminating"
	}
	return "stopped"
}

func ids(ss []*driver.Service) []uint64 {
	out := make([]uint64, len(ss))
	for i, s := range ss {
		out[i] = s.ID()
	}
	return out
}

func nodeOf(s *driver.Service) (Node, driver.State) {
	st := s.State()
	n := Node{ID: s.ID(), Class: s.Class(), Name: s.Name(), State: stateOf(st), Retain: st.Refs, Busy: st.Busy,
		Providers: ids(s.Providers()), Clients: ids(s.Clients()), OpenBy: ids(s.Openers())}
	if p := s.Personality(); p != nil {
		n.Driver = p.Name
	}
	return n, st
}

func treeOf(r *driver.Registry, seq uint64, view View) tree {
	services := r.Services()
	t := tree{SchemaVersion: schemaVersion, Seq: seq, Services: make([]Node, 0, len(services))}
	for _, s := range services {
		n, _ := nodeOf(s)
		if view != nil {
			view.Service(s, &n.Name, nil)
		}
		t.Services = append(t.Services, n)
	}
	return t
}

// detail describes a service not yet freed, found without taking a
// reference (holding one would itself keep it alive).
func (e *Explorer) detail(id uint64, view View) (serviceDetail, bool) {
	var s *driver.Service
	for _, x := range e.reg.Services() {
		if x.ID() == id {
			s = x
			break
		}
	}
	if s == nil {
		return serviceDetail{}, false
	}
	n, st := nodeOf(s)
	d := serviceDetail{Node: n, Traced: s.Traced(), Registered: st.Registered, Matched: st.Matched,
		Properties: s.Properties().Map(), Holders: []holder{}, Why: []string{},
		Timeline: eventsOf(e.serviceHistory(id))}
	if d.Properties == nil {
		d.Properties = map[string]any{}
	}
	if view != nil {
		view.Service(s, &d.Name, d.Properties)
	}
	if !st.Active {
		for _, b := range s.Blockers() {
			d.Holders = append(d.Holders, holder{Service: b.Service, What: b.What, Stacks: append([]string{}, b.Stacks...)})
		}
	}
	if d.Traced {
		for _, c := range refcount.WhyAlive(s.RefObject()) {
			d.Why = append(d.Why, c.String())
		}
	}
	return d, true
}

// leakReport is what `drvctl leaks` reports: the live traced objects that
// are not active services (every active service is legitimately alive);
// with all, every live traced object.
func leakReport(r *driver.Registry, all bool) (leaks, error) {
	var objs []*refcount.Object
	if all {
		objs = refcount.LiveObjects()
	} else {
		objs = r.LeakSuspects()
	}
	rep := refcount.NewReport(objs)
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		return leaks{}, fmt.Errorf("leak report: %w", err)
	}
	return leaks{Objects: len(objs), Text: b.String(), Report: rep}, nil
}
