package refcount

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Snapshot is a point-in-time count of live traced objects per class and of
// their outstanding references per class and tag and per retain stack.
// Two snapshots differ (Diff) by exactly what happened in between: the
// basis of per-test reference diffs.
type Snapshot struct {
	classes map[string]int
	refs    map[refKey]int
}

type refKey struct {
	class, tag string
	stack      stackID
}

// TakeSnapshot counts every live traced object and reference now.
func TakeSnapshot() *Snapshot {
	s := &Snapshot{classes: map[string]int{}, refs: map[refKey]int{}}
	for _, o := range LiveObjects() {
		s.classes[o.class]++
		for _, h := range o.Holders() {
			for i, sc := range h.stacks {
				s.refs[refKey{o.class, h.Tag, sc.id}] += h.refsAt(i)
			}
		}
	}
	return s
}

// Classes returns the live object count per class in the snapshot.
func (s *Snapshot) Classes() map[string]int {
	out := make(map[string]int, len(s.classes))
	for k, v := range s.classes {
		out[k] = v
	}
	return out
}

// CountDelta is a count before and after. Tag is empty in per-class
// deltas.
type CountDelta struct {
	Class  string `json:"class"`
	Tag    string `json:"tag,omitempty"`
	Before int    `json:"before"`
	After  int    `json:"after"`
}

// Change is After − Before.
func (c CountDelta) Change() int { return c.After - c.Before }

// StackDelta is the change of the references taken at one stack.
type StackDelta struct {
	CountDelta
	Stack Stack `json:"stack"`
}

// Delta is what changed between two snapshots; only changed entries are
// listed, largest growth first.
type Delta struct {
	Classes []CountDelta `json:"classes"` // live objects per class
	Tags    []CountDelta `json:"tags"`    // references per class and tag
	Stacks  []StackDelta `json:"stacks"`  // references per class, tag and stack
}

// Diff compares two snapshots.
func Diff(before, after *Snapshot) *Delta {
	d := &Delta{Classes: []CountDelta{}, Tags: []CountDelta{}, Stacks: []StackDelta{}}
	for c := range union(before.classes, after.classes) {
		if b, a := before.classes[c], after.classes[c]; a != b {
			d.Classes = append(d.Classes, CountDelta{Class: c, Before: b, After: a})
		}
	}
	type ct struct{ class, tag string }
	tb, ta := map[ct]int{}, map[ct]int{}
	for k, n := range before.refs {
		tb[ct{k.class, k.tag}] += n
	}
	for k, n := range after.refs {
		ta[ct{k.class, k.tag}] += n
	}
	for k := range union(tb, ta) {
		if b, a := tb[k], ta[k]; a != b {
			d.Tags = append(d.Tags, CountDelta{Class: k.class, Tag: k.tag, Before: b, After: a})
		}
	}
	for k := range union(before.refs, after.refs) {
		if b, a := before.refs[k], after.refs[k]; a != b {
			d.Stacks = append(d.Stacks, StackDelta{CountDelta: CountDelta{Class: k.class, Tag: k.tag, Before: b, After: a}, Stack: stackOf(k.stack)})
		}
	}
	less := func(x, y CountDelta) bool {
		if x.Change() != y.Change() {
			return x.Change() > y.Change()
		}
		if x.Class != y.Class {
			return x.Class < y.Class
		}
		return x.Tag < y.Tag
	}
	sort.Slice(d.Classes, func(i, j int) bool { return less(d.Classes[i], d.Classes[j]) })
	sort.Slice(d.Tags, func(i, j int) bool { return less(d.Tags[i], d.Tags[j]) })
	sort.Slice(d.Stacks, func(i, j int) bool {
		if d.Stacks[i].CountDelta != d.Stacks[j].CountDelta {
			return less(d.Stacks[i].CountDelta, d.Stacks[j].CountDelta)
		}
		return d.Stacks[i].Stack.String() < d.Stacks[j].Stack.String()
	})
	return d
}

func union[K comparable](a, b map[K]int) map[K]struct{} {
	out := make(map[K]struct{}, len(a)+len(b))
	for k := range a {
		out[k] = struct{}{}
	}
	for k := range b {
		out[k] = struct{}{}
	}
	return out
}

// Empty reports whether nothing changed.
func (d *Delta) Empty() bool { return len(d.Classes) == 0 && len(d.Tags) == 0 && len(d.Stacks) == 0 }

// WriteText writes the delta for people.
func (d *Delta) WriteText(w io.Writer) error {
	var b strings.Builder
	if d.Empty() {
		b.WriteString("no change\n")
	}
	if len(d.Classes) > 0 {
		b.WriteString("live objects:\n")
		for _, c := range d.Classes {
			fmt.Fprintf(&b, "  %+d %s (%d → %d)\n", c.Change(), c.Class, c.Before, c.After)
		}
	}
	if len(d.Tags) > 0 {
		b.WriteString("references by tag:\n")
		for _, c := range d.Tags {
			fmt.Fprintf(&b, "  %+d %s %s (%d → %d)\n", c.Change(), c.Class, rootLabel(c.Tag), c.Before, c.After)
		}
	}
	if len(d.Stacks) > 0 {
		b.WriteString("references by stack:\n")
		for _, c := range d.Stacks {
			fmt.Fprintf(&b, "  %+d %s %s at:\n", c.Change(), c.Class, rootLabel(c.Tag))
			c.Stack.writeIndented(&b, "      ")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
