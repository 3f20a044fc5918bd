package server

import (
	"fmt"
	"slices"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// Policy decides who may open what and who may call administrative
// operations. The zero Policy admits uid 0 only.
type Policy struct {
	// Rules admit a peer to services; any matching rule admits.
	Rules []Rule
	// AdminGIDs may make administrative calls, in addition to uid 0.
	AdminGIDs []uint32
}

// Rule admits the listed users and groups (primary or supplementary) to
// services of the listed classes or personalities.
type Rule struct {
	AnyUser bool     // every peer that can reach the socket
	UIDs    []uint32 // these users
	GIDs    []uint32 // members of these groups
	// Classes and Personalities restrict what may be opened; if both are
	// empty, everything may be.
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

// AllowOpen returns nil if c may open s, an error matching userclient.ErrPermission
// otherwise.
func (p *Policy) AllowOpen(c userclient.Cred, s userclient.ServiceInfo) error {
	if c.UID == 0 {
		return nil
	}
	for i := range p.Rules {
		if p.Rules[i].admitsPeer(c) && p.Rules[i].admitsService(s) {
			return nil
		}
	}
	return fmt.Errorf("%w: uid %d gid %d may not open %s#%d (personality %q)", wire.ErrPermission, c.UID, c.GID, s.Class, s.ID, s.Personality)
}

// AllowAdmin returns nil if c may call the administrative operation op.
func (p *Policy) AllowAdmin(c userclient.Cred, op string) error {
	if c.UID == 0 || inGroups(p.AdminGIDs, c) {
		return nil
	}
	return fmt.Errorf("%w: administrative call %q needs uid 0 or an admin group (peer uid %d gid %d)", wire.ErrPermission, op, c.UID, c.GID)
}
