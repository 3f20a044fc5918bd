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

	"github.com/drvkit/drvkit/userclient/server"
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
	if id := s.identity(); id != "" {
		parts = append(parts, esc(id))
	}
	if s.Driver != "" {
		d := "driver " + esc(s.Driver)
		if score, ok := propInt(s.Properties, propProbeScore); ok {
			d += fmt.Sprintf(", probe score %d", score)
		}
		if pc := propString(s.Properties, propProviderClass); pc != "" {
			d += ", provider " + esc(pc)
		}
		parts = append(parts, d)
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

func writeJSON(w io.Writer, d *inspectDoc, pretty bool) error {
	d.normalize()
	return writeJSONValue(w, d, pretty)
}

// dotStates are the node styles of the DOT picture, in legend order. The
// fills are the Okabe–Ito palette, which readers with any common colour
// vision deficiency tell apart, and every state differs in its border too
// (dashed, bold, double), so the picture survives a grey-scale print.
var dotStates = []struct {
	name, fill, font, style string
	peripheries             int
}{
	{"driver or matched", "#56B4E9", "black", "rounded,filled", 1},     // sky blue
	{"registered, unmatched", "#DDDDDD", "black", "rounded,filled", 1}, // grey
	{"busy", "#F0E442", "black", "rounded,filled,bold", 1},             // yellow
	{"user client", "#CC79A7", "black", "rounded,filled", 2},           // reddish purple
	{"terminating", "#D55E00", "white", "rounded,filled,dashed", 1},    // vermillion
}

func dotState(s *serviceEntry) int {
	switch {
	case !s.Active:
		return 4
	case s.Busy > 0:
		return 2
	case s.Class == server.UserClientClass:
		return 3
	case s.Matched || s.Driver != "":
		return 0
	default:
		return 1
	}
}

func dotNodeAttrs(i int) string {
	st := dotStates[i]
	a := fmt.Sprintf("fillcolor=%q, fontcolor=%q, style=%q", st.fill, st.font, st.style)
	if st.peripheries > 1 {
		a += fmt.Sprintf(", peripheries=%d", st.peripheries)
	}
	return a
}

// writeDOT draws the registry for graphviz: states as fills and borders,
// retain counts on nodes, provider → client edges leaving the provider's
// bottom for the client's top, and "open" edges (opener → opened) in
// another colour between the nodes' right sides without ranking them, so
// the two never lie on top of each other; a legend says all this.
func writeDOT(w io.Writer, d *inspectDoc) error {
	var b strings.Builder
	b.WriteString("digraph drvkit {\n")
	b.WriteString("  rankdir=TB;\n")
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=10];\n")
	services := append([]serviceEntry(nil), d.Services...)
	sort.Slice(services, func(i, j int) bool { return services[i].ID < services[j].ID })
	for i := range services {
		s := &services[i]
		label := fmt.Sprintf("%s\nid %d, retain %d", s.label(), s.ID, s.Retain)
		if id := s.identity(); id != "" {
			label = fmt.Sprintf("%s\n%s\nid %d, retain %d", s.label(), id, s.ID, s.Retain)
		}
		fmt.Fprintf(&b, "  s%d [label=%s, %s];\n", s.ID, dotQuote(label), dotNodeAttrs(dotState(s)))
	}
	for _, s := range services {
		for _, p := range s.Providers {
			fmt.Fprintf(&b, "  s%d -> s%d [tailport=s, headport=n];\n", p, s.ID)
		}
		for _, o := range s.OpenBy {
			fmt.Fprintf(&b, "  s%d -> s%d [tailport=e, headport=e, constraint=false, style=dashed, color=\"#0072B2\", fontcolor=\"#0072B2\", label=\"open\"];\n", o, s.ID)
		}
	}
	b.WriteString("  subgraph cluster_legend {\n")
	b.WriteString("    label=\"legend\"; fontname=\"Helvetica\"; style=rounded; color=\"#999999\";\n")
	for i, st := range dotStates {
		fmt.Fprintf(&b, "    legend%d [label=%q, %s];\n", i, st.name, dotNodeAttrs(i))
	}
	b.WriteString("    legend_p [label=\"provider\", shape=plaintext, style=\"\"];\n")
	b.WriteString("    legend_c [label=\"client\", shape=plaintext, style=\"\"];\n")
	b.WriteString("    legend_p -> legend_c [label=\"attached\"];\n")
	b.WriteString("    legend_o [label=\"opener\", shape=plaintext, style=\"\"];\n")
	b.WriteString("    legend_t [label=\"opened\", shape=plaintext, style=\"\"];\n")
	b.WriteString("    legend_o -> legend_t [style=dashed, color=\"#0072B2\", fontcolor=\"#0072B2\", label=\"open\"];\n")
	for i := 1; i < len(dotStates); i++ {
		fmt.Fprintf(&b, "    legend%d -> legend%d [style=invis];\n", i-1, i)
	}
	b.WriteString("  }\n")
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
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
		fmt.Fprintf(&b, "KERNEL[%s] %-8s %s (%s)\n", e.Time, esc(e.Action), esc(e.Devpath), esc(e.Subsystem))
	case "lost":
		fmt.Fprintf(&b, "LOST %d older events (the daemon keeps the last %d)\n", e.Count, monitorHistory)
	case "warning":
		fmt.Fprintf(&b, "WARNING[%s] %s\n", e.Time, esc(e.Detail))
	default:
		fmt.Fprintf(&b, "LIFECYCLE[%s] %-8s %s id=%d", e.Time, esc(e.Step), esc(e.Class), e.ServiceID)
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
