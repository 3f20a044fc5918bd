package server_test

import (
	"fmt"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// bundleRules gives the services of one driver (by personality name) a
// rule of their own, as drvctl serve does for a driver bundle's [access].
type bundleRules map[string]server.Rule

func (b bundleRules) RuleFor(s userclient.ServiceInfo) (server.Rule, bool) {
	r, ok := b[s.Personality]
	return r, ok
}

func (b bundleRules) Rules() []server.Rule {
	out := make([]server.Rule, 0, len(b))
	for _, r := range b {
		out = append(out, r)
	}
	return out
}

// A service with its own rule is opened by uid 0, the admins and whom the
// rule admits, whatever the policy's Rules say; other services keep them.
func ExamplePolicy_services() {
	p := server.Policy{
		Rules:     []server.Rule{{AnyUser: true}},
		AdminUIDs: []uint32{900},
		Services:  bundleRules{"kbd": {UIDs: []uint32{1000}, GIDs: []uint32{20}}},
	}
	kbd := userclient.ServiceInfo{ID: 7, Class: "HIDKeyboard", Personality: "kbd"}
	disk := userclient.ServiceInfo{ID: 8, Class: "SCSIDevice", Personality: "sg"}
	for _, c := range []userclient.Cred{
		{UID: 1000, GID: 1000},                       // listed
		{UID: 2000, GID: 2000, Groups: []uint32{20}}, // in a listed group
		{UID: 900, GID: 900},                         // an admin
		{UID: 3000, GID: 3000},                       // --any-user only
	} {
		fmt.Printf("uid %d: kbd %v, disk %v\n", c.UID, p.AllowOpen(c, kbd) == nil, p.AllowOpen(c, disk) == nil)
	}
	// Output:
	// uid 1000: kbd true, disk true
	// uid 2000: kbd true, disk true
	// uid 900: kbd true, disk true
	// uid 3000: kbd false, disk true
}
