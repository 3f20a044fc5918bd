package server

import (
	"fmt"
	"slices"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// Policy decides who may open what, who may read the daemon's state and
// who may call administrative operations. The zero Policy admits uid 0
// only.
//
// There are three rights. Open: Rules admit a peer to services. Read:
// the read views — services of ReadClasses (the monitor) and the
// administrative operations in ReadOps (inspect, leaks, …) — need uid 0,
// an AdminGIDs or a ReadGIDs group; no Rule grants them, so that
// "--any-user" never opens the monitor to everyone. Admin: every other
// administrative operation needs uid 0 or an AdminGIDs group.
//
// Refusals never say whether what was asked for exists: an open that
// matches only services the peer may not open fails as if nothing
// matched (ErrNoService), and a peer that no rule admits to anything gets
// ErrPermission whatever it asks.
type Policy struct {
	// Rules admit a peer to services; any matching rule admits.
	Rules []Rule
	// AdminGIDs may make administrative calls, in addition to uid 0; they
	// also have the read right.
	AdminGIDs []uint32
	// ReadGIDs have the read right, in addition to uid 0 and AdminGIDs.
	ReadGIDs []uint32
	// ReadOps are the administrative operations that only read: the read
	// right is enough for them.
	ReadOps []string
	// ReadClasses are service classes that are read views: opening one
	// needs the read right, and Rules never admit to them.
	ReadClasses []string
}

// Rule admits the listed users and groups (primary or supplementary) to
// services of the listed classes or personalities.
type Rule struct {
	AnyUser bool     // every peer that can reach the socket
	UIDs    []uint32 // these users
	GIDs    []uint32 // members of these groups
	// Classes and Personalities restrict what may be opened; if both are
	// empty, everything may be (except the policy's read classes).
	Classes       []string
	Personalities []string
}

func (r *Rule) admitsPeer(c userclient.Cred) bool {
	if r.AnyUser || slices.Contains(r.UIDs, c.UID) {
		return true
	}
	return inGroups(r.GIDs, c)
}

func (r *Rule) admitsService(s userclient.ServiceInfo) bool {
	if len(r.Classes) == 0 && len(r.Personalities) == 0 {
		return true
	}
	return slices.Contains(r.Classes, s.Class) || s.Personality != "" && slices.Contains(r.Personalities, s.Personality)
}

func inGroups(gids []uint32, c userclient.Cred) bool {
	if slices.Contains(gids, c.GID) {
		return true
	}
	for _, g := range c.Groups {
		if slices.Contains(gids, g) {
			return true
		}
	}
	return false
}

// mayRead reports whether c has the read right.
func (p *Policy) mayRead(c userclient.Cred) bool {
	return c.UID == 0 || inGroups(p.AdminGIDs, c) || inGroups(p.ReadGIDs, c)
}

// admitsAny reports whether c may open anything at all: a rule admits it,
// or it has the read right (the read views).
func (p *Policy) admitsAny(c userclient.Cred) bool {
	if p.mayRead(c) {
		return true
	}
	for i := range p.Rules {
		if p.Rules[i].admitsPeer(c) {
			return true
		}
	}
	return false
}

// AllowOpen returns nil if c may open s, an error matching
// userclient.ErrPermission otherwise. The error names the peer, not s: it
// goes to the audit log, and the client is told only ErrNoService
// (Server.openSession).
func (p *Policy) AllowOpen(c userclient.Cred, s userclient.ServiceInfo) error {
	if c.UID == 0 {
		return nil
	}
	if slices.Contains(p.ReadClasses, s.Class) {
		if p.mayRead(c) {
			return nil
		}
		return fmt.Errorf("%w: uid %d may not read the daemon's state", wire.ErrPermission, c.UID)
	}
	for i := range p.Rules {
		if p.Rules[i].admitsPeer(c) && p.Rules[i].admitsService(s) {
			return nil
		}
	}
	return fmt.Errorf("%w: uid %d gid %d may not open %s", wire.ErrPermission, c.UID, c.GID, s)
}

// AllowAdmin returns nil if c may call the administrative operation op.
func (p *Policy) AllowAdmin(c userclient.Cred, op string) error {
	if c.UID == 0 || inGroups(p.AdminGIDs, c) {
		return nil
	}
	if slices.Contains(p.ReadOps, op) {
		if p.mayRead(c) {
			return nil
		}
		return fmt.Errorf("%w: administrative call %q needs uid 0, an admin group or a read group (peer uid %d gid %d)", wire.ErrPermission, op, c.UID, c.GID)
	}
	return fmt.Errorf("%w: administrative call %q needs uid 0 or an admin group (peer uid %d gid %d)", wire.ErrPermission, op, c.UID, c.GID)
}
