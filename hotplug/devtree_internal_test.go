package hotplug

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDevTreeMatchesPrefixScan checks the tree against what remove used to
// do (scan every known path for the prefix) over random adds and drops of
// paths that nest at random depths, and that it is empty once nothing is
// known: an index that kept the directories of unplugged devices would
// grow for ever on a host that plugs and unplugs.
func TestDevTreeMatchesPrefixScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	paths := []string{}
	for _, a := range []string{"/devices/pci0/usb1", "/devices/pci0/host0", "/devices/virtual"} {
		for i := range 4 {
			p := a + "/" + string(rune('a'+i))
			paths = append(paths, p)
			for j := range 3 {
				q := p + "/t" + string(rune('0'+j))
				paths = append(paths, q, q+"/lun", q+"/lun/sg")
			}
		}
	}
	tr := newDevTree()
	known := map[string]bool{}
	isKnown := func(p string) bool { return known[p] }
	for range 20000 {
		p := paths[rng.IntN(len(paths))]
		if known[p] {
			delete(known, p)
			tr.drop(p, isKnown)
		} else {
			known[p] = true
			tr.add(p)
		}
		q := paths[rng.IntN(len(paths))]
		var want, got []string
		for k := range known {
			if k == q || strings.HasPrefix(k, q+"/") {
				want = append(want, k)
			}
		}
		tr.under(q, func(k string) {
			if known[k] {
				got = append(got, k)
			}
		})
		slices.Sort(want)
		slices.Sort(got)
		require.Equal(t, want, got, "under %s", q)
	}
	for k := range known {
		delete(known, k)
		tr.drop(k, isKnown)
	}
	require.Empty(t, tr.kids)
}
