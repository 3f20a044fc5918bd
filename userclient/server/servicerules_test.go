package server

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// byPersonality is ServiceRules as a daemon with driver bundles has them:
// a rule per personality name.
type byPersonality map[string]Rule

func (b byPersonality) RuleFor(s userclient.ServiceInfo) (Rule, bool) {
	r, ok := b[s.Personality]
	return r, ok
}

func (b byPersonality) Rules() []Rule {
	var out []Rule
	for _, r := range b {
		out = append(out, r)
	}
	return out
}

var _ ServiceRules = byPersonality(nil)

// A service with a rule of its own (a bundle's [access]) is opened only by
// uid 0, the admins and whom that rule admits — by uid, primary or
// supplementary group — whatever the policy's Rules say; the other
// services keep the policy's Rules. A peer a service rule admits passes
// the check made before the lookup; an admin does as soon as any service
// has a rule.
func TestServiceRules(t *testing.T) {
	bundled := userclient.ServiceInfo{ID: 7, Class: "HIDKeyboard", Personality: "kbd"}
	plain := userclient.ServiceInfo{ID: 8, Class: "SCSIDevice", Personality: "sg"}
	kbd := Rule{UIDs: []uint32{1001}, GIDs: []uint32{50}, Personalities: []string{"kbd"}}
	cred := func(uid, gid uint32, groups ...uint32) userclient.Cred {
		return userclient.Cred{PID: 1, UID: uid, GID: gid, Groups: groups}
	}
	for _, tc := range []struct {
		name          string
		policy        Policy
		c             userclient.Cred
		bundled       bool // may open the bundle's service
		plain         bool // may open the other service
		passesTheGate bool // is not refused before the lookup
	}{
		{"root", Policy{}, cred(0, 0), true, true, true},
		{"listed uid, no flag", Policy{}, cred(1001, 1001), true, false, true},
		{"listed primary group", Policy{}, cred(2000, 50), true, false, true},
		{"listed supplementary group", Policy{}, cred(2000, 2000, 10, 50), true, false, true},
		{"unlisted", Policy{}, cred(2000, 2000, 10), false, false, false},
		{"any-user does not open a listed bundle", Policy{Rules: []Rule{{AnyUser: true}}}, cred(2000, 2000), false, true, true},
		{"allow-uids does not either", Policy{Rules: []Rule{{UIDs: []uint32{2000}}}}, cred(2000, 2000), false, true, true},
		{"admin uid", Policy{AdminUIDs: []uint32{3000}}, cred(3000, 3000), true, false, true},
		{"admin group", Policy{AdminGIDs: []uint32{60}}, cred(3000, 3000, 60), true, false, true},
		{"reader is no admin", Policy{ReadAnyUser: true}, cred(2000, 2000), false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			p.Services = byPersonality{"kbd": kbd}
			check := func(want bool, s userclient.ServiceInfo) {
				err := p.AllowOpen(tc.c, s)
				if want {
					require.NoError(t, err, "%s", s)
				} else {
					require.ErrorIs(t, err, wire.ErrPermission, "%s", s)
				}
			}
			check(tc.bundled, bundled)
			check(tc.plain, plain)
			require.Equal(t, tc.passesTheGate, p.mayOpenAny(tc.c))
		})
	}
	// No service rule at all: an admin without an open rule opens nothing.
	p := Policy{AdminUIDs: []uint32{3000}, Services: byPersonality{}}
	require.False(t, p.mayOpenAny(cred(3000, 3000)))
	require.ErrorIs(t, p.AllowOpen(cred(3000, 3000), plain), wire.ErrPermission)
}

// Over a real server: a peer refused a service by its own rule hears what
// it would if the service did not exist ("no such service" when some rule
// admits it to something, "permission denied" when none does), and a peer
// the service's rule admits opens it with no rule of the policy's.
func TestServiceRulesOverServer(t *testing.T) {
	ts := newTestServer(t, Config{Policy: Policy{
		Rules:    []Rule{{UIDs: []uint32{1000}}},
		Services: byPersonality{"TestDriver": {UIDs: []uint32{1001}}},
	}})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		uid  uint32
		want error
	}{
		{"admitted elsewhere", 1000, wire.ErrNoService},
		{"admitted nowhere", 2000, wire.ErrPermission},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := peer(ts, tc.uid, tc.uid)
			_, _, errExists := c.openWaiting(ctx, wire.OpenMsg{Match: userclient.Match{Class: "TestDevice"}})
			_, _, errNope := c.openWaiting(ctx, wire.OpenMsg{Match: userclient.Match{Class: "NoDevice"}})
			require.ErrorIs(t, errExists, tc.want)
			require.Equal(t, errNope.Error(), errExists.Error())
		})
	}
	c := peer(ts, 1001, 1001)
	e, info, err := c.openWaiting(ctx, wire.OpenMsg{Match: userclient.Match{Class: "TestDevice"}})
	require.NoError(t, err)
	require.Equal(t, "TestDevice", info.Class)
	require.NoError(t, e.sess.Close())
}
