package main

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// bundleAccess enforces the [access] tables of the loaded bundles: a
// bundle that lists uids or gids has its services opened only by uid 0,
// the admins and those users and groups, whatever --allow-uids or
// --any-user say; one that lists nothing leaves its services to the
// daemon's policy. A service is a bundle's when its personality is the
// bundle's name (a bundle's personalities all carry its name, and no
// other driver may take it).
//
// The rules are read on every open and change only at load and unload:
// a copied-on-write snapshot behind an atomic pointer.
type bundleAccess struct {
	mu   sync.Mutex // serializes writers
	snap atomic.Pointer[accessSnapshot]
}

type accessSnapshot struct {
	byName map[string]server.Rule
	all    []server.Rule
}

var _ server.ServiceRules = (*bundleAccess)(nil)

func newBundleAccess() *bundleAccess {
	a := &bundleAccess{}
	a.snap.Store(&accessSnapshot{})
	return a
}

// RuleFor is the rule of s's bundle, if it lists anyone.
func (a *bundleAccess) RuleFor(s userclient.ServiceInfo) (server.Rule, bool) {
	if s.Personality == "" {
		return server.Rule{}, false
	}
	r, ok := a.snap.Load().byName[s.Personality]
	return r, ok
}

// Rules are every loaded bundle's rule.
func (a *bundleAccess) Rules() []server.Rule { return a.snap.Load().all }

// set makes m's [access] table the rule of its services (none, when it
// lists nobody). It is called before m's personalities are registered, so
// that no instance of m is ever open to the daemon's default policy.
func (a *bundleAccess) set(m *bundle.Manifest) {
	var r *server.Rule
	if len(m.Access.UIDs) > 0 || len(m.Access.GIDs) > 0 {
		r = &server.Rule{UIDs: m.Access.UIDs, GIDs: m.Access.GIDs, Personalities: []string{m.Name}}
	}
	a.update(m.Name, r)
}

// forget removes the rule of the bundle name, after its instances ended
// (or, unloaded by force, became inactive: nothing opens those).
func (a *bundleAccess) forget(name string) { a.update(name, nil) }

func (a *bundleAccess) update(name string, r *server.Rule) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.snap.Load()
	byName := maps.Clone(old.byName)
	if byName == nil {
		byName = map[string]server.Rule{}
	}
	delete(byName, name)
	if r != nil {
		byName[name] = *r
	}
	s := &accessSnapshot{byName: byName, all: make([]server.Rule, 0, len(byName))}
	for _, r := range byName {
		s.all = append(s.all, r)
	}
	a.snap.Store(s)
}
