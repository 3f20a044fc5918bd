package hotplug

// devTree indexes the device paths the bridge knows (published nubs and
// pending devices) by their parent path, so a remove finds what is under
// a path by walking down from it — O(depth + subtree) — instead of
// scanning every known device (which made unplugging n devices O(n²)).
//
// A path is in the tree while it is known or has a descendant that is:
// the directories between a known device and its nearest known ancestor
// (a SCSI host and target between a USB interface and its LUN) are linked
// too, so any path's subtree is reachable from it.
type devTree struct {
	kids map[string]map[string]struct{} // path -> child paths in the tree
	// spare holds child sets emptied by drop, for add to reuse: plug and
	// unplug churn would otherwise allocate a set for every directory
	// level of every device (a few dozen retained sets bound the memory).
	spare []map[string]struct{}
}

const maxSpareSets = 64

func newDevTree() devTree { return devTree{kids: map[string]map[string]struct{}{}} }

// add links p and its ancestors up to the first one already linked.
func (t *devTree) add(p string) {
	for p != "" {
		par := parentPath(p)
		if par == "" {
			return
		}
		m, linked := t.kids[par]
		if !linked {
			if n := len(t.spare); n > 0 {
				m, t.spare = t.spare[n-1], t.spare[:n-1]
			} else {
				m = map[string]struct{}{}
			}
			t.kids[par] = m
		}
		if _, ok := m[p]; ok {
			return
		}
		m[p] = struct{}{}
		if linked {
			return // par already had children: it and its ancestors are linked
		}
		p = par
	}
}

// drop unlinks p, which is no longer known, unless descendants remain,
// and then each ancestor left with neither children nor a known device.
func (t *devTree) drop(p string, known func(string) bool) {
	for p != "" {
		if len(t.kids[p]) > 0 {
			return
		}
		par := parentPath(p)
		m := t.kids[par]
		if m == nil {
			return
		}
		delete(m, p)
		if len(m) > 0 {
			return
		}
		delete(t.kids, par)
		if len(t.spare) < maxSpareSets {
			t.spare = append(t.spare, m)
		}
		if known(par) {
			return
		}
		p = par
	}
}

// under calls f for p and every path in the tree below it.
func (t *devTree) under(p string, f func(string)) {
	f(p)
	for c := range t.kids[p] {
		t.under(c, f)
	}
}
