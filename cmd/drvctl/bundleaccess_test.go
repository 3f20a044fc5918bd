package main

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// The daemon's record of the bundles' [access] tables: a bundle that lists
// someone has a rule for its services (by personality name) and only
// those; one that lists nobody has none (the policy's rules decide);
// loading again replaces the rule, forgetting removes it.
func TestBundleAccessRules(t *testing.T) {
	a := newBundleAccess()
	svc := func(personality string) userclient.ServiceInfo {
		return userclient.ServiceInfo{ID: 9, Class: "Counter", Personality: personality}
	}
	_, ok := a.RuleFor(svc("kbd"))
	require.False(t, ok)
	require.Empty(t, a.Rules())

	a.set(&bundle.Manifest{Name: "kbd", Access: bundle.Access{UIDs: []uint32{1000}, GIDs: []uint32{20}}})
	a.set(&bundle.Manifest{Name: "open"}) // lists nobody
	r, ok := a.RuleFor(svc("kbd"))
	require.True(t, ok)
	require.Equal(t, server.Rule{UIDs: []uint32{1000}, GIDs: []uint32{20}, Personalities: []string{"kbd"}}, r)
	for _, p := range []string{"open", "", "sg"} {
		_, ok := a.RuleFor(svc(p))
		require.False(t, ok, "%q", p)
	}
	require.Len(t, a.Rules(), 1)

	// Loaded again with another list.
	a.set(&bundle.Manifest{Name: "kbd", Access: bundle.Access{GIDs: []uint32{30}}})
	r, _ = a.RuleFor(svc("kbd"))
	require.Equal(t, []uint32{30}, r.GIDs)
	require.Empty(t, r.UIDs)
	// Loaded again with none: the policy decides.
	a.set(&bundle.Manifest{Name: "kbd"})
	_, ok = a.RuleFor(svc("kbd"))
	require.False(t, ok)
	a.set(&bundle.Manifest{Name: "kbd", Access: bundle.Access{UIDs: []uint32{1}}})
	a.forget("kbd")
	_, ok = a.RuleFor(svc("kbd"))
	require.False(t, ok)
	require.Empty(t, a.Rules())
}

// Opens read the rules while loads and unloads change them (run with
// -race): a reader sees one snapshot or the next, never a torn one.
func TestBundleAccessConcurrent(t *testing.T) {
	a := newBundleAccess()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// (t.Errorf: FailNow belongs to the test's goroutine.)
				if r, ok := a.RuleFor(userclient.ServiceInfo{Personality: "kbd"}); ok && (len(r.Personalities) != 1 || len(r.UIDs) != 1) {
					t.Errorf("torn rule %+v", r)
					return
				}
				for _, r := range a.Rules() {
					if len(r.Personalities) != 1 {
						t.Errorf("torn rule %+v", r)
						return
					}
				}
			}
		}()
	}
	for i := range 2000 {
		a.set(&bundle.Manifest{Name: "kbd", Access: bundle.Access{UIDs: []uint32{uint32(i)}}})
		a.forget("kbd")
	}
	close(stop)
	wg.Wait()
}
