package driver

import "sort"

// liveSet is the registry's set of services not yet freed, kept in ID order
// (guarded by Registry.mu). It replaces a map keyed by ID: a service knows
// its slot, so removing it at free writes one word next to the words of the
// services freed just before it, instead of probing a hash table as large
// as the registry, which costs a cache miss per free once the registry
// outgrows the CPU caches. Freed slots become holes, swept when they
// outnumber the services, so every operation stays amortized O(1) (lookup
// by ID is a binary search).
type liveSet struct {
	svcs []*Service // nil: a hole left by a freed service
	ids  []uint64   // ids[i] is the ID of svcs[i], kept for holes too, ascending
	n    int        // services (non-holes)
}

func (l *liveSet) add(s *Service) {
	i := len(l.svcs)
	l.svcs = append(l.svcs, s)
	l.ids = append(l.ids, s.ID())
	s.slot = i
	// IDs are taken before the registry lock, so a service created
	// concurrently with another may arrive out of order: move it back past
	// every later-born service (in practice at most a few places).
	for j := i - 1; j >= 0 && l.ids[j] > l.ids[i]; j-- {
		l.ids[i], l.ids[j] = l.ids[j], l.ids[i]
		l.svcs[i], l.svcs[j] = l.svcs[j], l.svcs[i]
		if l.svcs[i] != nil {
			l.svcs[i].slot = i
		}
		l.svcs[j].slot = j
		i = j
	}
	l.n++
}

func (l *liveSet) remove(s *Service) {
	if s.slot < 0 || s.slot >= len(l.svcs) || l.svcs[s.slot] != s {
		return
	}
	l.svcs[s.slot] = nil
	s.slot = -1
	l.n--
	if holes := len(l.svcs) - l.n; holes > 32 && holes > l.n {
		l.compact()
	}
}

// compact sweeps the holes out.
func (l *liveSet) compact() {
	k := 0
	for i, s := range l.svcs {
		if s == nil {
			continue
		}
		l.svcs[k], l.ids[k] = s, l.ids[i]
		s.slot = k
		k++
	}
	clear(l.svcs[k:])
	l.svcs, l.ids = l.svcs[:k], l.ids[:k]
	if cap(l.svcs) > 64 && cap(l.svcs) > 4*k {
		// Give the memory of a registry that shrank a lot back.
		l.svcs = append([]*Service(nil), l.svcs...)
		l.ids = append([]uint64(nil), l.ids...)
	}
}

func (l *liveSet) lookup(id uint64) *Service {
	i := sort.Search(len(l.ids), func(i int) bool { return l.ids[i] >= id })
	if i < len(l.ids) && l.ids[i] == id {
		return l.svcs[i]
	}
	return nil
}

// appendTo appends the services for which keep (nil: all) is true to dst,
// in ID order.
func (l *liveSet) appendTo(dst []*Service, keep func(*Service) bool) []*Service {
	for _, s := range l.svcs {
		if s != nil && (keep == nil || keep(s)) {
			dst = append(dst, s)
		}
	}
	return dst
}
