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
// There are three rights, as usbguard's IPC access sections have. Open:
// Rules admit a peer to services. Read: the read views — services of
// ReadClasses (the monitor) and the administrative operations in ReadOps
// (inspect, leaks, …) — need uid 0, an admin, ReadAnyUser or a ReadUIDs
// user or ReadGIDs group; no Rule grants them, so that "--any-user" never
// opens the monitor by itself. Admin: every other administrative operation
// needs uid 0, an AdminUIDs user or an AdminGIDs group.
//
// Refusals never say whether what was asked for exists: an open that
// matches only services the peer may not open fails as if nothing
// matched (ErrNoService), and a peer that no rule admits to any service
// gets ErrPermission whatever it asks.
type Policy struct {
	// Rules admit a peer to services; any matching rule admits.
	Rules []Rule
	// AdminUIDs and AdminGIDs may make administrative calls, in addition
	// to uid 0; they also have the read right.
	AdminUIDs []uint32
	AdminGIDs []uint32
	// ReadAnyUser gives the read right to every peer that can reach the
	// socket, as anyone may run ioreg or udevadm monitor. What identifies
	// another user's process is for the daemon to hide from non-admins
	// (IsAdmin).
	ReadAnyUser bool
	// ReadUIDs and ReadGIDs have the read right, in addition to uid 0 and
	// the admins.
	ReadUIDs []uint32
	ReadGIDs []uint32
	// ReadOps are the administrative operations that only read: the read
	// right is enough for them.
	ReadOps []string
	// ReadClasses are service classes that are read views: opening one
	// needs the read right, and Rules never admit to them.
	ReadClasses []string
	// OpenHint, ReadHint and AdminHint, if set, end the refusal of that
	// right in parentheses: how the operator grants it ("drvctl serve
	// --admin-uids"), which this package cannot know.
	OpenHint, ReadHint, AdminHint string
	// Services, if set, gives services rules of their own (a driver
	// bundle's [access] table). For a service that has one, it replaces
	// Rules: only uid 0, the admins and the peers it admits may open it.
	Services ServiceRules
}

// ServiceRules are open rules that come with services rather than with the
// operator's policy: the daemon's loaded driver bundles. They change while
// the server runs, so both methods are called on every open and must be
// safe for concurrent use.
type ServiceRules interface {
	// RuleFor returns the rule that decides who besides uid 0 and the
	// admins may open s; false if the Policy's Rules decide.
	RuleFor(s userclient.ServiceInfo) (Rule, bool)
	// Rules lists every such rule: a peer one of them admits (an admin, if
	// there is any) may open something, so it is not refused before the
	// lookup.
	Rules() []Rule
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

// IsAdmin reports whether c has the admin right.
func (p *Policy) IsAdmin(c userclient.Cred) bool {
	return c.UID == 0 || slices.Contains(p.AdminUIDs, c.UID) || inGroups(p.AdminGIDs, c)
}

// MayRead reports whether c has the read right.
func (p *Policy) MayRead(c userclient.Cred) bool {
	return p.ReadAnyUser || p.IsAdmin(c) || slices.Contains(p.ReadUIDs, c.UID) || inGroups(p.ReadGIDs, c)
}

// mayOpenAny reports whether a rule admits c to some service.
func (p *Policy) mayOpenAny(c userclient.Cred) bool {
	if c.UID == 0 {
		return true
	}
	for i := range p.Rules {
		if p.Rules[i].admitsPeer(c) {
			return true
		}
	}
	if p.Services != nil {
		rs := p.Services.Rules()
		if len(rs) > 0 && p.IsAdmin(c) {
			return true
		}
		for i := range rs {
			if rs[i].admitsPeer(c) {
				return true
			}
		}
	}
	return false
}

func hint(h string) string {
	if h == "" {
		return ""
	}
	return " (" + h + ")"
}

// refuseRead is the refusal of the read right for what.
func (p *Policy) refuseRead(c userclient.Cred, what string) error {
	return fmt.Errorf("%w: %s reads the daemon's state, which needs the read right: uid 0, an admin or a reader (peer uid %d gid %d)%s",
		wire.ErrPermission, what, c.UID, c.GID, hint(p.ReadHint))
}

// refuseOpenAll is the refusal of a peer that no rule admits to anything.
func (p *Policy) refuseOpenAll(c userclient.Cred) error {
	return fmt.Errorf("%w: opening a service needs the open right, which no rule gives uid %d gid %d%s",
		wire.ErrPermission, c.UID, c.GID, hint(p.OpenHint))
}

// AllowOpen returns nil if c may open s, an error matching
// userclient.ErrPermission otherwise. The error names the peer and s: it
// goes to the audit log, and the client is told only ErrNoService
// (Server.openSession) unless no rule admits it to anything.
func (p *Policy) AllowOpen(c userclient.Cred, s userclient.ServiceInfo) error {
	if c.UID == 0 {
		return nil
	}
	if slices.Contains(p.ReadClasses, s.Class) {
		if p.MayRead(c) {
			return nil
		}
		return p.refuseRead(c, "opening "+s.Class)
	}
	if p.Services != nil {
		if r, ok := p.Services.RuleFor(s); ok {
			if p.IsAdmin(c) || r.admitsPeer(c) && r.admitsService(s) {
				return nil
			}
			return fmt.Errorf("%w: uid %d gid %d may not open %s: its own access list admits only uid 0, the admins, uids %v and gids %v",
				wire.ErrPermission, c.UID, c.GID, s, r.UIDs, r.GIDs)
		}
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
	if p.IsAdmin(c) {
		return nil
	}
	if slices.Contains(p.ReadOps, op) {
		if p.MayRead(c) {
			return nil
		}
		return p.refuseRead(c, fmt.Sprintf("%q", op))
	}
	return fmt.Errorf("%w: %q is an administrative call, which needs the admin right: uid 0 or an admin (peer uid %d gid %d)%s",
		wire.ErrPermission, op, c.UID, c.GID, hint(p.AdminHint))
}
