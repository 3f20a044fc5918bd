package refcount

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// SchemaVersion is the version of the JSON report; it changes only when a
// key is renamed or removed or its meaning changes. Version 2: "site" is
// the blamed frame (Stack.Blame), no longer the innermost one; why_alive
// holds owning chains only.
const SchemaVersion = 2

// ObjRef names an object in reports.
type ObjRef struct {
	ID    uint64 `json:"id"`
	Class string `json:"class"`
}

func refOf(o *Object) ObjRef { return ObjRef{ID: o.id, Class: o.class} }

func (r ObjRef) String() string { return fmt.Sprintf("%s#%d", r.Class, r.ID) }

// StackRefs is a stack with the number of references taken there, and
// the frame to blame for them (Stack.Blame).
type StackRefs struct {
	References int   `json:"references"`
	Blame      Frame `json:"blame"`
	Stack      Stack `json:"stack"`
}

func newStackRefs(n int, s Stack) StackRefs {
	return StackRefs{References: n, Blame: s.Blame(), Stack: s}
}

// LeakGroup is every outstanding reference whose retain is blamed on one
// frame (Stack.Blame: the innermost frame that is not drvkit's own code).
type LeakGroup struct {
	Site       Frame       `json:"site"`
	References int         `json:"references"`
	Objects    int         `json:"objects"`
	Classes    []string    `json:"classes"`
	Tags       []string    `json:"tags"`
	Stacks     []StackRefs `json:"stacks"` // distinct full stacks, most references first
	// Ambiguous is true when some references here belong to a tag whose
	// pairing is ambiguous (Holding.Ambiguous): References is then an
	// upper bound.
	Ambiguous bool `json:"ambiguous,omitempty"`
}

// Chain is one path of holders keeping an object alive: a root (a holder
// that is not a live traced object: a string tag, a client label, the
// untagged reference, an untraced or already freed owner) and the objects
// from the one the root holds down to the object asked about. Every edge
// of a chain is an owning reference, except the root's own when
// Structural is set: then nothing owns the top of the path, which is kept
// by structural references only (the registry, its attachments).
type Chain struct {
	Root       string   `json:"root"`
	Site       Frame    `json:"root_site"` // blamed frame of the root's reference
	Path       []ObjRef `json:"path"`
	Structural bool     `json:"structural,omitempty"`
}

func (c Chain) String() string {
	var b strings.Builder
	b.WriteString(rootLabel(c.Root))
	for _, o := range c.Path {
		b.WriteString(" → ")
		b.WriteString(o.String())
	}
	if c.Structural {
		b.WriteString(" (structural)")
	}
	return b.String()
}

func rootLabel(root string) string {
	if root == "" {
		return "(untagged)"
	}
	return fmt.Sprintf("%q", root)
}

// Cycle is a strongly connected group of live traced objects that hold
// references only on each other: nothing outside can ever release them.
// Edges are those references, each with the stacks that took it.
type Cycle struct {
	Objects []ObjRef    `json:"objects"`
	Edges   []CycleEdge `json:"edges"`
}

// CycleEdge is one reference inside a cycle: Holder holds Held, tagged Tag.
type CycleEdge struct {
	Holder    ObjRef      `json:"holder"`
	Held      ObjRef      `json:"held"`
	Tag       string      `json:"tag"`
	Ambiguous bool        `json:"ambiguous,omitempty"`
	Stacks    []StackRefs `json:"stacks"`
}

func (c Cycle) String() string {
	var parts []string
	for _, o := range c.Objects {
		parts = append(parts, o.String())
	}
	if len(parts) > 0 {
		parts = append(parts, parts[0])
	}
	return strings.Join(parts, " → ")
}

// HolderReport is one outstanding holder in a report.
type HolderReport struct {
	Tag        string      `json:"tag"`
	Owner      *ObjRef     `json:"owner,omitempty"`
	References int         `json:"references"`
	Structural bool        `json:"structural,omitempty"`
	Ambiguous  bool        `json:"ambiguous,omitempty"` // see Holding.Ambiguous
	Stacks     []StackRefs `json:"stacks"`
}

// ObjectReport describes one live object.
type ObjectReport struct {
	ID          uint64         `json:"id"`
	Class       string         `json:"class"`
	RetainCount int            `json:"retain_count"`
	Holders     []HolderReport `json:"holders"`
	WhyAlive    []Chain        `json:"why_alive"`
	// Structural lists the object's structural holders, as context.
	Structural []Chain `json:"structural,omitempty"`
	Note       string  `json:"note,omitempty"`
}

// ClassCount is a number of live objects of one class.
type ClassCount struct {
	Class string `json:"class"`
	Count int    `json:"count"`
}

// Report is everything refcount knows about a set of live traced objects.
type Report struct {
	SchemaVersion int            `json:"schema_version"`
	Live          []ClassCount   `json:"live"`
	Leaks         []LeakGroup    `json:"leaks"`
	Cycles        []Cycle        `json:"cycles"`
	Objects       []ObjectReport `json:"objects"`
	// ObjectsTotal counts every object reported on; Objects details those
	// of the page asked for (NewReportPage). NextAfter, when more follow,
	// is the ID to ask the next page after.
	ObjectsTotal int      `json:"objects_total"`
	NextAfter    uint64   `json:"next_after,omitempty"`
	Notes        []string `json:"notes,omitempty"`

	objs []*Object
}

// CurrentReport reports on every live traced object.
func CurrentReport() *Report { return NewReport(LiveObjects()) }

// NewReport reports on objs (untraced ones are listed without holders).
func NewReport(objs []*Object) *Report { return NewReportPage(objs, Page{}) }

// Page selects the objects a report details, in ID order: those whose ID
// is above After, at most Limit of them (0: no limit). A report on a
// hundred thousand objects is hundreds of megabytes when each is detailed
// with its holders' stacks; a page keeps it bounded.
type Page struct {
	After uint64
	Limit int
}

// NewReportPage reports on objs, detailing the objects of page p. The
// summaries — live objects by class, unmatched retains by blamed frame,
// cycles — always cover every object.
func NewReportPage(objs []*Object, p Page) *Report {
	objs = append([]*Object(nil), objs...)
	sort.Slice(objs, func(i, j int) bool { return objs[i].id < objs[j].id })
	r := &Report{SchemaVersion: SchemaVersion, objs: objs, Live: liveOf(objs), Leaks: leaksOf(objs), Cycles: cyclesTouching(objs), ObjectsTotal: len(objs)}
	if r.Live == nil {
		r.Live = []ClassCount{}
	}
	if r.Leaks == nil {
		r.Leaks = []LeakGroup{}
	}
	if r.Cycles == nil {
		r.Cycles = []Cycle{}
	}
	inCycle := map[uint64]bool{}
	for _, c := range r.Cycles {
		for _, o := range c.Objects {
			inCycle[o.ID] = true
		}
	}
	r.Objects = []ObjectReport{}
	first := sort.Search(len(objs), func(i int) bool { return objs[i].id > p.After })
	page := objs[first:]
	if p.Limit > 0 && len(page) > p.Limit {
		page = page[:p.Limit]
		r.NextAfter = page[len(page)-1].id
	}
	for _, o := range page {
		or := ObjectReport{ID: o.id, Class: o.class, RetainCount: o.RetainCount(), Holders: []HolderReport{}, WhyAlive: WhyAlive(o), Structural: StructuralHolders(o)}
		for _, h := range o.Holders() {
			hr := HolderReport{Tag: h.Tag, References: h.Count, Structural: h.Structural, Ambiguous: h.Ambiguous, Stacks: h.stackRefs()}
			if h.Owner != nil {
				ref := refOf(h.Owner)
				hr.Owner = &ref
			}
			or.Holders = append(or.Holders, hr)
		}
		switch {
		case !o.Traced():
			or.Note = "not traced: holders unknown"
		case inCycle[o.id]:
			or.Note = "in a cycle held only by its members"
		case len(or.WhyAlive) == 0:
			or.Note = "no root holds it: kept alive only by objects in cycles"
		}
		if or.WhyAlive == nil {
			or.WhyAlive = []Chain{}
		}
		r.Objects = append(r.Objects, or)
	}
	return r
}

// Empty reports whether the report names no live object.
func (r *Report) Empty() bool { return r.ObjectsTotal == 0 }

func (h Holding) stackRefs() []StackRefs {
	out := make([]StackRefs, len(h.Stacks))
	for i, s := range h.Stacks {
		out[i] = newStackRefs(h.StackCounts[i], s)
	}
	return out
}

func liveOf(objs []*Object) []ClassCount {
	m := map[string]int{}
	for _, o := range objs {
		m[o.class]++
	}
	out := make([]ClassCount, 0, len(m))
	for c, n := range m {
		out = append(out, ClassCount{Class: c, Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Class < out[j].Class
	})
	return out
}

// Leaks groups every outstanding reference on live traced objects by the
// frame blamed for its unmatched retain (Stack.Blame; the creator's
// reference counts, at the Init call). A holder whose pairing is ambiguous
// counts at each candidate stack, up to its outstanding references.
func Leaks() []LeakGroup { return leaksOf(LiveObjects()) }

func leaksOf(objs []*Object) []LeakGroup {
	type acc struct {
		g       LeakGroup
		objs    map[uint64]bool
		classes map[string]bool
		tags    map[string]bool
		stacks  map[stackID]int
	}
	blame := map[stackID]Frame{}
	groups := map[Frame]*acc{}
	for _, o := range objs {
		for _, h := range o.Holders() {
			for i, sc := range h.stacks {
				site, ok := blame[sc.id]
				if !ok {
					site = stackOf(sc.id).Blame()
					blame[sc.id] = site
				}
				n := h.refsAt(i)
				a := groups[site]
				if a == nil {
					a = &acc{g: LeakGroup{Site: site}, objs: map[uint64]bool{}, classes: map[string]bool{}, tags: map[string]bool{}, stacks: map[stackID]int{}}
					groups[site] = a
				}
				a.g.References += n
				a.g.Ambiguous = a.g.Ambiguous || h.Ambiguous
				a.objs[o.id] = true
				a.classes[o.class] = true
				a.tags[h.Tag] = true
				a.stacks[sc.id] += n
			}
		}
	}
	out := make([]LeakGroup, 0, len(groups))
	for _, a := range groups {
		a.g.Objects = len(a.objs)
		a.g.Classes = sortedKeys(a.classes)
		a.g.Tags = sortedKeys(a.tags)
		for id, n := range a.stacks {
			a.g.Stacks = append(a.g.Stacks, newStackRefs(n, stackOf(id)))
		}
		sort.Slice(a.g.Stacks, func(i, j int) bool {
			if a.g.Stacks[i].References != a.g.Stacks[j].References {
				return a.g.Stacks[i].References > a.g.Stacks[j].References
			}
			return a.g.Stacks[i].Stack.String() < a.g.Stacks[j].Stack.String()
		})
		out = append(out, a.g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].References != out[j].References {
			return out[i].References > out[j].References
		}
		return out[i].Site.String() < out[j].Site.String()
	})
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// isLive reports whether o is a traced object that has not been freed.
func isLive(o *Object) bool {
	if o == nil || o.tr == nil {
		return false
	}
	o.tr.mu.Lock()
	defer o.tr.mu.Unlock()
	return !o.tr.freed
}

const (
	maxChains     = 32
	maxChainDepth = 64
)

// WhyAlive returns the chains of owning references that keep o alive,
// each from a root down to o, shortest first (at most 32). An owning
// holder that is a live traced object is followed to its own holders;
// any other holder is a root. Structural references (Structural tags:
// the registry's, provider↔client attachments) are not followed: an object
// on the way that nothing owns ends a chain marked Structural, rooted at
// its structural holder, which is how an active service nobody uses
// answers. Objects held only through cycles have no chain.
func WhyAlive(o *Object) []Chain {
	if o == nil || o.tr == nil {
		return nil
	}
	var out []Chain
	path := []*Object{o}
	onPath := map[*Object]bool{o: true}
	emit := func(h Holding, root string, structural bool) {
		c := Chain{Root: root, Path: make([]ObjRef, 0, len(path)), Structural: structural}
		if len(h.Stacks) > 0 {
			c.Site = h.Stacks[0].Blame()
		}
		for i := len(path) - 1; i >= 0; i-- {
			c.Path = append(c.Path, refOf(path[i]))
		}
		out = append(out, c)
	}
	var walk func(cur *Object)
	walk = func(cur *Object) {
		if len(out) >= maxChains {
			return
		}
		hs := cur.Holders()
		offPath := false
		var structural *Holding
		for i, h := range hs {
			if h.Structural {
				// Prefer a root (the registry) over an attachment.
				if structural == nil || structural.Owner != nil && h.Owner == nil {
					structural = &hs[i]
				}
				continue
			}
			if h.Owner != nil && isLive(h.Owner) {
				if onPath[h.Owner] || len(path) >= maxChainDepth {
					continue
				}
				offPath = true
				onPath[h.Owner] = true
				path = append(path, h.Owner)
				walk(h.Owner)
				path = path[:len(path)-1]
				delete(onPath, h.Owner)
				if len(out) >= maxChains {
					return
				}
				continue
			}
			offPath = true
			root := h.Tag
			if h.Owner != nil {
				if h.Owner.tr == nil {
					root = h.Tag + " (untraced)"
				} else {
					root = h.Tag + " (freed)"
				}
			}
			emit(h, root, false)
			if len(out) >= maxChains {
				return
			}
		}
		if !offPath && structural != nil {
			emit(*structural, structural.Tag, true)
		}
	}
	walk(o)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Structural != out[j].Structural {
			return !out[i].Structural
		}
		return len(out[i].Path) < len(out[j].Path)
	})
	return out
}

// StructuralHolders lists o's structural references (the registry's,
// attachments) as one-step chains: the context of WhyAlive.
func StructuralHolders(o *Object) []Chain {
	var out []Chain
	for _, h := range o.Holders() {
		if !h.Structural {
			continue
		}
		c := Chain{Root: h.Tag, Path: []ObjRef{refOf(o)}, Structural: true}
		if len(h.Stacks) > 0 {
			c.Site = h.Stacks[0].Blame()
		}
		out = append(out, c)
	}
	return out
}

// Cycles finds the strongly connected groups of live traced objects (over
// Owner edges) that are held only by each other: every outstanding holder
// of every member is another member. Tarjan's algorithm, iterative.
func Cycles() []Cycle { return cyclesOf(LiveObjects()) }

func cyclesTouching(objs []*Object) []Cycle {
	want := map[uint64]bool{}
	for _, o := range objs {
		want[o.id] = true
	}
	var out []Cycle
	for _, c := range cyclesOf(LiveObjects()) {
		for _, o := range c.Objects {
			if want[o.ID] {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

func cyclesOf(objs []*Object) []Cycle {
	idx := map[*Object]int{}
	for i, o := range objs {
		idx[o] = i
	}
	holders := make([][]Holding, len(objs))
	succ := make([][]int, len(objs)) // owner -> held
	for i, o := range objs {
		holders[i] = o.Holders()
		for _, h := range holders[i] {
			if j, ok := idx[h.Owner]; ok && h.Owner != nil {
				succ[j] = append(succ[j], i)
			}
		}
	}
	for _, s := range succ {
		sort.Ints(s)
	}
	sccs := tarjan(len(objs), succ)
	var out []Cycle
	for _, comp := range sccs {
		member := map[int]bool{}
		for _, v := range comp {
			member[v] = true
		}
		selfLoop := false
		closed := true
		for _, v := range comp {
			for _, h := range holders[v] {
				j, ok := idx[h.Owner]
				if h.Owner == nil || !ok || !member[j] {
					closed = false
				}
				if ok && j == v {
					selfLoop = true
				}
			}
		}
		if !closed || (len(comp) == 1 && !selfLoop) {
			continue
		}
		sort.Ints(comp)
		c := Cycle{Edges: []CycleEdge{}}
		for _, v := range comp {
			c.Objects = append(c.Objects, refOf(objs[v]))
			for _, h := range holders[v] {
				c.Edges = append(c.Edges, CycleEdge{Holder: refOf(h.Owner), Held: refOf(objs[v]), Tag: h.Tag, Ambiguous: h.Ambiguous, Stacks: h.stackRefs()})
			}
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Objects[0].ID < out[j].Objects[0].ID })
	return out
}

// tarjan returns the strongly connected components of the graph, without
// recursion so that a long ownership chain cannot exhaust the stack.
func tarjan(n int, succ [][]int) [][]int {
	index := make([]int, n)
	low := make([]int, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	var stack []int
	var out [][]int
	next := 0
	type frame struct{ v, i int }
	for root := 0; root < n; root++ {
		if index[root] >= 0 {
			continue
		}
		call := []frame{{v: root}}
		index[root], low[root] = next, next
		next++
		stack = append(stack, root)
		onStack[root] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			if f.i < len(succ[f.v]) {
				w := succ[f.v][f.i]
				f.i++
				if index[w] < 0 {
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					call = append(call, frame{v: w})
				} else if onStack[w] && index[w] < low[f.v] {
					low[f.v] = index[w]
				}
				continue
			}
			v := f.v
			call = call[:len(call)-1]
			if len(call) > 0 {
				if p := call[len(call)-1].v; low[v] < low[p] {
					low[p] = low[v]
				}
			}
			if low[v] == index[v] {
				var comp []int
				for {
					w := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					onStack[w] = false
					comp = append(comp, w)
					if w == v {
						break
					}
				}
				out = append(out, comp)
			}
		}
	}
	return out
}

// WriteText writes a human report on every live traced object.
func WriteText(w io.Writer) error { return CurrentReport().WriteText(w) }

// WriteJSON writes the JSON report on every live traced object.
func WriteJSON(w io.Writer) error { return CurrentReport().WriteJSON(w) }

// WriteProfile writes a gzipped pprof profile of every outstanding
// reference on live traced objects.
func WriteProfile(w io.Writer) error { return CurrentReport().WriteProfile(w) }

// WriteJSON writes the report as indented JSON with stable snake_case keys.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people: live counts per class, leaks
// grouped by blamed frame, cycles with the stacks of their references,
// and each object with its holders, why-alive chains and structural
// context. Every stack leads with its blamed frame (Stack.Blame) in short
// form, then the full stack as "func file:line".
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "refcount: %d live object(s)\n", r.ObjectsTotal)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if r.ObjectsTotal == 0 {
		_, err := io.WriteString(w, b.String())
		return err
	}
	b.WriteString("\nlive objects by class:\n")
	for _, c := range r.Live {
		fmt.Fprintf(&b, "  %-24s %d\n", c.Class, c.Count)
	}
	b.WriteString("\nunmatched retains by blamed frame:\n")
	for _, g := range r.Leaks {
		upTo := ""
		if g.Ambiguous {
			upTo = "up to "
		}
		fmt.Fprintf(&b, "  %s%d reference(s) on %d object(s) [%s] retained at %s\n", upTo, g.References, g.Objects, strings.Join(g.Classes, ", "), g.Site.Short())
		fmt.Fprintf(&b, "    tags: %s\n", tagList(g.Tags))
		for _, s := range g.Stacks {
			fmt.Fprintf(&b, "    %d× from:\n", s.References)
			s.Stack.writeIndented(&b, "      ")
		}
	}
	if len(r.Cycles) > 0 {
		b.WriteString("\ncycles (held only by each other):\n")
		for _, c := range r.Cycles {
			fmt.Fprintf(&b, "  %s\n", c)
			for _, e := range c.Edges {
				fmt.Fprintf(&b, "    %s holds %s (tag %s)%s\n", e.Holder, e.Held, rootLabel(e.Tag), ambiguousNote(e.Ambiguous))
				for _, s := range e.Stacks {
					writeRetained(&b, s, "      ")
				}
			}
		}
	}
	b.WriteString("\nobjects:\n")
	for _, o := range r.Objects {
		fmt.Fprintf(&b, "  %s#%d retain count %d", o.Class, o.ID, o.RetainCount)
		if o.Note != "" {
			fmt.Fprintf(&b, " (%s)", o.Note)
		}
		b.WriteString("\n")
		for _, h := range o.Holders {
			kind := ""
			if h.Structural {
				kind = " (structural)"
			}
			fmt.Fprintf(&b, "    held by %s ×%d%s%s\n", holderLabel(h), h.References, kind, ambiguousNote(h.Ambiguous))
			for _, s := range h.Stacks {
				writeRetained(&b, s, "      ")
			}
		}
		for _, c := range o.WhyAlive {
			fmt.Fprintf(&b, "    why alive: %s", c)
			if c.Site.Func != "" {
				fmt.Fprintf(&b, " (root retained at %s)", c.Site.Short())
			}
			b.WriteString("\n")
		}
		if len(o.Structural) > 0 {
			var parts []string
			for _, c := range o.Structural {
				parts = append(parts, rootLabel(c.Root))
			}
			fmt.Fprintf(&b, "    structural: %s\n", strings.Join(parts, ", "))
		}
	}
	if len(r.Objects) < r.ObjectsTotal {
		fmt.Fprintf(&b, "\n%d of %d object(s) detailed", len(r.Objects), r.ObjectsTotal)
		if r.NextAfter != 0 {
			fmt.Fprintf(&b, "; the next page starts after #%d", r.NextAfter)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func ambiguousNote(ambiguous bool) string {
	if !ambiguous {
		return ""
	}
	return ", ambiguous: retained at several stacks and released fewer times; any of these retains may be the outstanding one"
}

// writeRetained writes one stack of a holder: the blamed frame first, then
// the full stack.
func writeRetained(b *strings.Builder, s StackRefs, indent string) {
	fmt.Fprintf(b, "%s%d× retained at %s\n", indent, s.References, s.Blame.Short())
	s.Stack.writeIndented(b, indent+"  ")
}

func holderLabel(h HolderReport) string {
	if h.Owner != nil && !h.Structural {
		return "owner " + h.Owner.String()
	}
	return rootLabel(h.Tag)
}

func tagList(tags []string) string {
	var parts []string
	for i, t := range tags {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("… %d more", len(tags)-8))
			break
		}
		parts = append(parts, rootLabel(t))
	}
	return strings.Join(parts, ", ")
}

// writeHolding is used by Error.
func writeHolding(b *strings.Builder, h Holding, indent string) {
	label := rootLabel(h.Tag)
	if h.Owner != nil && !h.Structural {
		label = "owner " + h.Owner.String()
	}
	fmt.Fprintf(b, "%s%s ×%d%s\n", indent, label, h.Count, ambiguousNote(h.Ambiguous))
	for i, s := range h.Stacks {
		writeRetained(b, newStackRefs(h.StackCounts[i], s), indent+"  ")
	}
}
