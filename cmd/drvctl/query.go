package main

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver"
)

// Queries and filters: which services `drvctl inspect` shows and which
// events `drvctl monitor` prints. They travel to the daemon, which applies
// them before encoding anything, so a filtered inspect of a registry of
// 100,000 devices sends (and renders) only what matched.

// propMatch is KEY=VALUE. VALUE is a glob (path.Match) for text; for a
// number it is the number, decimal or 0x-hex (idVendor=0x0781 and
// idVendor=1921 are the same); for a flag true or false.
type propMatch struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func parsePropMatch(s string) (propMatch, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return propMatch{}, fmt.Errorf("%q: want KEY=VALUE", s)
	}
	return propMatch{Key: k, Value: v}, nil
}

func (m propMatch) String() string { return m.Key + "=" + m.Value }

// glob matches s against pattern; a malformed pattern matches itself only.
func glob(pattern, s string) bool {
	ok, err := path.Match(pattern, s)
	if err != nil {
		return pattern == s
	}
	return ok
}

// matchValue compares a property's value with m.Value.
func (m propMatch) matchValue(v any) bool {
	switch v := v.(type) {
	case string:
		return glob(m.Value, v)
	case bool:
		b, err := strconv.ParseBool(m.Value)
		return err == nil && b == v
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float64:
		want, ok := parseNumber(m.Value)
		if !ok {
			return false
		}
		switch v := v.(type) {
		case float64:
			return v == float64(want)
		default:
			n, _ := strconv.ParseInt(fmt.Sprint(v), 10, 64)
			return n == want
		}
	}
	return glob(m.Value, fmt.Sprint(v))
}

// parseNumber reads decimal or 0x-hex (a leading 0 is decimal: lsusb's
// "0781" is not octal).
func parseNumber(s string) (int64, bool) {
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		n, err := strconv.ParseInt(h, 16, 64)
		return n, err == nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// inspectQuery selects services: those matching every filter given, each
// with its subtree (Depth levels, as ioreg's -d: 1 is the service alone;
// 0 is unlimited) and, with
// Parents, its providers up to the root. No filter: the whole registry.
type inspectQuery struct {
	Target     string      `json:"target,omitempty"` // an ID, Class@Name, a name, or a devpath
	Class      string      `json:"class,omitempty"`  // glob
	Name       string      `json:"name,omitempty"`   // glob
	Properties []propMatch `json:"properties,omitempty"`
	Depth      int         `json:"depth,omitempty"`
	Parents    bool        `json:"parents,omitempty"`
}

func (q *inspectQuery) filtered() bool {
	return q.Target != "" || q.Class != "" || q.Name != "" || len(q.Properties) > 0
}

// matchTarget: an ID, the tree's label (USBDevice@2-1), a name (2-1,
// usbstorage), or a device path (/devices/…/2-1, or the same under /sys).
func (q *inspectQuery) matchTarget(s *driver.Service) bool {
	t := q.Target
	if id, err := strconv.ParseUint(t, 10, 64); err == nil {
		return s.ID() == id
	}
	if s.Name() == t || s.Class()+"@"+s.Name() == t || s.Class() == t && s.Name() == "" {
		return true
	}
	if strings.HasPrefix(t, "/") {
		dp, _ := s.Properties().String("devpath")
		return dp != "" && (dp == t || "/sys"+dp == t || dp == strings.TrimSuffix(t, "/"))
	}
	return false
}

func (q *inspectQuery) match(s *driver.Service) bool {
	if q.Target != "" && !q.matchTarget(s) {
		return false
	}
	if q.Class != "" && !glob(q.Class, s.Class()) {
		return false
	}
	if q.Name != "" && !glob(q.Name, s.Name()) {
		return false
	}
	if len(q.Properties) > 0 {
		// The properties inspect shows: a driver instance's own.
		get := s.Properties().Get
		if p := s.Personality(); p != nil {
			own := driverProperties(s, p)
			get = func(k string) (any, bool) { v, ok := own[k]; return v, ok }
		}
		for _, m := range q.Properties {
			v, ok := get(m.Key)
			if !ok || !m.matchValue(v) {
				return false
			}
		}
	}
	return true
}

// selectServices applies q to services (sorted by ID); it returns them
// all when q selects everything.
func (q *inspectQuery) selectServices(services []*driver.Service) []*driver.Service {
	if !q.filtered() && q.Depth <= 0 {
		return services
	}
	keep := make(map[*driver.Service]bool)
	var down func(s *driver.Service, depth int)
	down = func(s *driver.Service, depth int) {
		keep[s] = true
		if q.Depth > 0 && depth >= q.Depth {
			return
		}
		for _, c := range s.Clients() {
			// Drawn under its first provider only, as the tree does.
			if ps := c.Providers(); len(ps) > 0 && ps[0] == s && !keep[c] {
				down(c, depth+1)
			}
		}
	}
	for _, s := range services {
		if q.filtered() && !q.match(s) {
			continue
		}
		if !q.filtered() && len(s.Providers()) > 0 {
			continue // without a filter, -d counts from the roots
		}
		down(s, 1)
		if q.Parents {
			for p := s.Providers(); len(p) > 0; p = p[0].Providers() {
				keep[p[0]] = true
			}
		}
	}
	out := services[:0:0]
	for _, s := range services {
		if keep[s] {
			out = append(out, s)
		}
	}
	return out
}

// monitorFilter selects monitor events. Subsystems and Properties (of the
// uevent) concern kernel events, Classes lifecycle events; without Kinds,
// the kinds a filter concerns are the ones shown (--subsystem usb alone
// shows only uevents). Lost-event and warning lines always pass.
type monitorFilter struct {
	Kinds      []string    `json:"kinds,omitempty"`      // kernel, lifecycle
	Subsystems []string    `json:"subsystems,omitempty"` // globs
	Classes    []string    `json:"classes,omitempty"`    // globs
	Properties []propMatch `json:"properties,omitempty"` // of the uevent
}

func (f *monitorFilter) check() error {
	for _, k := range f.Kinds {
		if k != "kernel" && k != "lifecycle" {
			return fmt.Errorf("unknown event kind %q (want kernel or lifecycle)", k)
		}
	}
	return nil
}

func (f *monitorFilter) empty() bool {
	return f == nil || len(f.Kinds) == 0 && len(f.Subsystems) == 0 && len(f.Classes) == 0 && len(f.Properties) == 0
}

func anyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if glob(p, s) {
			return true
		}
	}
	return false
}

func (f *monitorFilter) kindShown(kind string) bool {
	if len(f.Kinds) > 0 {
		for _, k := range f.Kinds {
			if k == kind {
				return true
			}
		}
		return false
	}
	kernel := len(f.Subsystems) > 0 || len(f.Properties) > 0
	lifecycle := len(f.Classes) > 0
	if kernel == lifecycle {
		return true
	}
	return kind == "kernel" && kernel || kind == "lifecycle" && lifecycle
}

func (f *monitorFilter) match(e *monitorEvent) bool {
	if f.empty() {
		return true
	}
	switch e.Kind {
	case "kernel":
		if !f.kindShown("kernel") {
			return false
		}
		if len(f.Subsystems) > 0 && !anyGlob(f.Subsystems, e.Subsystem) {
			return false
		}
		for _, m := range f.Properties {
			v, ok := e.Env[m.Key]
			if !ok || !glob(m.Value, v) {
				return false
			}
		}
		return true
	case "lifecycle":
		if !f.kindShown("lifecycle") {
			return false
		}
		return len(f.Classes) == 0 || anyGlob(f.Classes, e.Class)
	}
	return true // lost, warning
}

// filterBox holds a monitor session's filter, set by a call after the
// open while events already flow.
type filterBox struct{ p atomic.Pointer[monitorFilter] }

func (b *filterBox) match(e *monitorEvent) bool {
	f := b.p.Load()
	return f == nil || f.match(e)
}
