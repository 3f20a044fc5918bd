package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// label is how a service is named in the tree: Class@Name, as ioreg names
// entries by location.
func (s *serviceEntry) label() string {
	if s.Name == "" || s.Name == s.Class {
		return esc(s.Class)
	}
	return esc(s.Class) + "@" + esc(s.Name)
}

// esc makes a name from a flag, a driver or a device safe to print on a
// terminal: one with a control character (an escape sequence that would
// rewrite the screen), or that is not valid UTF-8, is printed Go-quoted;
// every other name as it is.
func esc(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func (s *serviceEntry) stateText() string {
	flag := func(on bool, name string) string {
		if on {
			return name
		}
		return "!" + name
	}
	active := "active"
	switch {
	case !s.Active:
		active = "inactive"
	case s.Starting:
		active = "active, starting"
	}
	parts := []string{"class " + esc(s.Class), fmt.Sprintf("id %d", s.ID)}
	if s.Driver != "" {
		parts = append(parts, "driver "+esc(s.Driver))
	}
	parts = append(parts, flag(s.Registered, "registered"), flag(s.Matched, "matched"), active,
		fmt.Sprintf("busy %d", s.Busy), fmt.Sprintf("retain %d", s.Retain))
	if len(s.OpenBy) > 0 {
		ids := make([]string, len(s.OpenBy))
		for i, id := range s.OpenBy {
			ids[i] = fmt.Sprint(id)
		}
		parts = append(parts, "open by "+strings.Join(ids, ","))
	}
	return strings.Join(parts, ", ")
}

// tree indexes a document for rendering: every service is drawn once,
// under its first provider; services whose providers are all unknown are
// roots.
type tree struct {
	byID     map[uint64]*serviceEntry
	children map[uint64][]uint64
	roots    []uint64
}

func newTree(d *inspectDoc) *tree {
	t := &tree{byID: map[uint64]*serviceEntry{}, children: map[uint64][]uint64{}}
	for i := range d.Services {
		t.byID[d.Services[i].ID] = &d.Services[i]
	}
	for _, s := range d.Services {
		if len(s.Providers) > 0 {
			if _, ok := t.byID[s.Providers[0]]; ok {
				t.children[s.Providers[0]] = append(t.children[s.Providers[0]], s.ID)
				continue
			}
		}
		t.roots = append(t.roots, s.ID)
	}
	byID := func(ids []uint64) {
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	}
	byID(t.roots)
	for _, c := range t.children {
		byID(c)
	}
	return t
}

// writeTree prints the ioreg-like tree; long adds the properties.
func writeTree(w io.Writer, d *inspectDoc, long bool) error {
	t := newTree(d)
	var b strings.Builder
	var walk func(id uint64, indent string, last bool)
	walk = func(id uint64, indent string, last bool) {
		s := t.byID[id]
		fmt.Fprintf(&b, "%s+-o %s  <%s>\n", indent, s.label(), s.stateText())
		child := indent + "| "
		if last {
			child = indent + "  "
		}
		kids := t.children[id]
		if long {
			writeProperties(&b, child, s.Properties, len(kids) > 0)
		}
		for i, k := range kids {
			walk(k, child, i == len(kids)-1)
		}
	}
	for i, r := range t.roots {
		walk(r, "", i == len(t.roots)-1)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeProperties(b *strings.Builder, indent string, props map[string]any, more bool) {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	bar := "  "
	if more {
		bar = "| "
	}
	fmt.Fprintf(b, "%s%s{\n", indent, bar)
	for _, k := range keys {
		fmt.Fprintf(b, "%s%s  %q = %s\n", indent, bar, k, propertyText(props[k]))
	}
	fmt.Fprintf(b, "%s%s}\n", indent, bar)
	fmt.Fprintf(b, "%s\n", strings.TrimRight(indent+bar, " "))
}

func propertyText(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case float64:
		if v == float64(int64(v)) {
			return fmt.Sprintf("%d", int64(v))
		}
		return fmt.Sprint(v)
	case bool:
		if v {
			return "Yes"
		}
		return "No"
	default:
		j, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(j)
	}
}

func writeJSON(w io.Writer, d *inspectDoc) error {
	d.normalize()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}

// writeDOT draws the registry for graphviz: states as colours, retain
// counts on nodes, provider → client edges (dashed for open).
func writeDOT(w io.Writer, d *inspectDoc) error {
	var b strings.Builder
	b.WriteString("digraph drvkit {\n")
	b.WriteString("  rankdir=TB;\n")
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n")
	services := append([]serviceEntry(nil), d.Services...)
	sort.Slice(services, func(i, j int) bool { return services[i].ID < services[j].ID })
	for i := range services {
		s := &services[i]
		fmt.Fprintf(&b, "  s%d [label=%s, fillcolor=%q];\n", s.ID,
			dotQuote(fmt.Sprintf("%s\nid %d, retain %d", s.label(), s.ID, s.Retain)), stateColour(s))
	}
	for _, s := range services {
		for _, p := range s.Providers {
			fmt.Fprintf(&b, "  s%d -> s%d;\n", p, s.ID)
		}
		for _, o := range s.OpenBy {
			fmt.Fprintf(&b, "  s%d -> s%d [style=dashed, label=\"open\"];\n", o, s.ID)
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func stateColour(s *serviceEntry) string {
	switch {
	case !s.Active:
		return "#f4a6a6" // terminating: red
	case s.Busy > 0:
		return "#f6d186" // busy: amber
	case s.Matched || s.Driver != "":
		return "#a8d5a2" // matched, or a driver instance: green
	default:
		return "#dde3ea" // registered but unmatched: grey
	}
}

func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// writeMonitorLine prints one event as udevadm monitor does; env adds the
// properties, one per line, followed by a blank line.
func writeMonitorLine(w io.Writer, e *monitorEvent, env bool) error {
	var b strings.Builder
	switch e.Kind {
	case "kernel":
		fmt.Fprintf(&b, "KERNEL[%.6f] %-8s %s (%s)\n", e.Time, esc(e.Action), esc(e.Devpath), esc(e.Subsystem))
	case "lost":
		fmt.Fprintf(&b, "LOST %d older events (the daemon keeps the last %d)\n", e.Count, monitorHistory)
	case "warning":
		fmt.Fprintf(&b, "WARNING[%.6f] %s\n", e.Time, esc(e.Detail))
	default:
		fmt.Fprintf(&b, "LIFECYCLE[%.6f] %-8s %s id=%d", e.Time, esc(e.Step), esc(e.Class), e.ServiceID)
		if e.Name != "" && e.Name != e.Class {
			fmt.Fprintf(&b, " name=%s", esc(e.Name))
		}
		if e.Detail != "" {
			fmt.Fprintf(&b, " (%s)", esc(e.Detail))
		}
		switch {
		case e.Cause == "":
		case e.RootCause == "" || e.RootCause == e.Cause:
			fmt.Fprintf(&b, " cause=%s", e.Cause)
		default:
			fmt.Fprintf(&b, " cause=%s root=%s", e.Cause, e.RootCause)
		}
		b.WriteString("\n")
	}
	if env && len(e.Env) > 0 {
		keys := make([]string, 0, len(e.Env))
		for k := range e.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", esc(k), esc(e.Env[k]))
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
