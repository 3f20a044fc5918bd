package main

import (
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
)

// maxID is the largest valid uid or gid: (uid_t)-1 means "no change" to
// chown and is nobody's id.
const maxID = 1<<32 - 2

// checkSocketGID refuses a --socket-gid that is not -1 or a valid group
// id: 4294967296 would wrap to group 0 in chown.
func checkSocketGID(g int) error {
	if g < -1 || int64(g) > maxID {
		return fmt.Errorf("--socket-gid %d: want -1 (the daemon's group) or a group id from 0 to %d", g, int64(maxID))
	}
	return nil
}

// lookupGroups is user.LookupId + GroupIds, replaceable in tests.
var lookupGroups = func(uid uint32) ([]string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, err
	}
	return u.GroupIds()
}

// checkReachable makes --allow-uids without a way to reach the socket a
// start-up error instead of a silently useless rule: the socket is mode
// 0660, owned by the daemon's uid and the --socket-gid group (or the
// daemon's group), so an allowed user must be the daemon's user or a
// member of that group.
func checkReachable(o serveOptions, uids, _ []uint32) error {
	if socketMode(o)&0o006 == 0o006 {
		return nil // anyone may connect
	}
	group := o.socketGroup
	if group < 0 {
		group = os.Getegid()
	}
	euid := uint32(os.Geteuid())
	for _, u := range uids {
		if u == 0 || u == euid {
			continue
		}
		gids, err := lookupGroups(u)
		if err != nil {
			return fmt.Errorf("--allow-uids %d: cannot tell whether it can reach the socket (group %d): %v; give --socket-gid a group it is a member of", u, group, err)
		}
		if !slices.Contains(gids, strconv.Itoa(group)) {
			return fmt.Errorf("--allow-uids %d: uid %d cannot reach the socket (mode 0660, group %d, not one of its groups); give --socket-gid a group it is a member of", u, u, group)
		}
	}
	return nil
}
