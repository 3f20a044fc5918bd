package driver

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLiveSet checks the registry's live set against a map model: adds
// slightly out of ID order (as concurrent creation produces them), removes
// in random order through several compactions, lookups of live and freed
// IDs, and ID order of the listing.
func TestLiveSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var all []*Service
	for range 500 {
		s := &Service{}
		s.ref.Init("LiveSetTest", nil)
		all = append(all, s)
	}
	t.Cleanup(func() {
		for _, s := range all {
			s.ref.Release()
		}
	})
	// Born in ID order, added with neighbours swapped now and then.
	order := append([]*Service(nil), all...)
	for i := 0; i+1 < len(order); i += 1 + rng.IntN(4) {
		order[i], order[i+1] = order[i+1], order[i]
	}
	var l liveSet
	model := map[uint64]*Service{}
	check := func() {
		t.Helper()
		require.Equal(t, len(model), l.n)
		got := l.appendTo(nil, nil)
		require.Len(t, got, len(model))
		for i, s := range got {
			require.Same(t, model[s.ID()], s)
			require.Same(t, s, l.svcs[s.slot])
			if i > 0 {
				require.Less(t, got[i-1].ID(), s.ID())
			}
		}
		for _, s := range all {
			if model[s.ID()] != nil {
				require.Same(t, s, l.lookup(s.ID()))
			} else {
				require.Nil(t, l.lookup(s.ID()))
			}
		}
	}
	for _, s := range order {
		l.add(s)
		model[s.ID()] = s
	}
	check()
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for i, s := range order {
		l.remove(s)
		l.remove(s) // a second remove is a no-op
		delete(model, s.ID())
		if i%37 == 0 {
			check()
		}
	}
	check()
	require.Less(t, len(l.svcs), 64, "holes are swept")
	require.Nil(t, l.lookup(0))
}
