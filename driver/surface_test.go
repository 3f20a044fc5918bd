package driver_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
)

// TestServiceSurface checks that a driver sees none of the reference
// count's lifecycle methods on a *Service: the registry creates and frees
// services, so Init and the untagged Retain/Release must not be callable
// on one, while the tagged forwarders and the identity stay.
func TestServiceSurface(t *testing.T) {
	st := reflect.TypeFor[*driver.Service]()
	for _, name := range []string{"Init", "Retain", "Release", "History", "Holders", "TraceStats", "Created", "Goroutine", "Object"} {
		_, ok := st.MethodByName(name)
		require.False(t, ok, "*driver.Service has method %s", name)
		_, ok = st.Elem().FieldByName(name)
		require.False(t, ok, "driver.Service has field %s", name)
	}
	for _, name := range []string{"ID", "Class", "String", "TaggedRetain", "TaggedRelease", "RetainCount", "Traced", "RefObject"} {
		_, ok := st.MethodByName(name)
		require.True(t, ok, "*driver.Service lacks %s", name)
	}
	// A service used as a tag is an ownership edge.
	var _ refcount.Owner = (*driver.Service)(nil)
}

// TestSelfTagIdiom is IOKit's provider.TaggedRetain(self) through the
// forwarders: the reference is an ownership edge self → provider, pairs
// with the release of the same tag in Stop, and everything is freed.
func TestSelfTagIdiom(t *testing.T) {
	e := newEnv(t)
	type seen struct {
		before, after int
		sites         []string
	}
	got := make(chan seen, 1)
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "drv", Class: "SelfTag",
		New: func() driver.Driver {
			return &testDriver{log: e.log,
				start: func(_ context.Context, s *driver.Service) error {
					p := s.Providers()[0]
					before := ownedBy(p, s)
					p.TaggedRetain(s)
					got <- seen{before, ownedBy(p, s), sitesOf(p, s)}
					return nil
				},
				stop: func(s *driver.Service) { s.Providers()[0].TaggedRelease(s) },
			}
		}}))
	nub := e.r.NewNub("Nub", "n0", driver.Properties{})
	require.True(t, nub.Traced())
	require.NoError(t, e.r.Publish(nil, nub))
	g := <-got
	require.Equal(t, g.before+1, g.after, "provider.TaggedRetain(self) is not an ownership edge self → provider")
	// The reference's stack starts in the driver's code, not in the
	// forwarder.
	require.Contains(t, g.sites, "github.com/drvkit/drvkit/driver_test.TestSelfTagIdiom.func1.1")
	for _, s := range g.sites {
		require.NotContains(t, s, "TaggedRetain")
	}
	require.NoError(t, nub.TerminateSync(ctxT(t)))
}

// sitesOf lists the call sites of the references on s tagged owner.
func sitesOf(s, owner *driver.Service) []string {
	var out []string
	for _, h := range s.RefObject().Holders() {
		if h.Owner == owner.RefObject() {
			for _, st := range h.Stacks {
				out = append(out, st.Site().Func)
			}
		}
	}
	return out
}

// ownedBy counts the references on s held with owner as the tag.
func ownedBy(s, owner *driver.Service) int {
	n := 0
	for _, h := range s.RefObject().Holders() {
		if h.Owner == owner.RefObject() {
			n += h.Count
		}
	}
	return n
}
