package main

import (
	"os"

	"regexp"
	"strconv"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/explorer"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// viewer is who asked the daemon for its state. The read right lets any
// local user see the registry, as ioreg does; what identifies another
// user's process — the pid, uid, gid and command of the application behind
// a user client — is shown to administrators only (and to the user whose
// process it is, where the daemon can tell).
type viewer struct {
	admin bool
	uid   uint32
}

func viewerOf(p *server.Policy, c userclient.Cred) viewer {
	return viewer{admin: p.IsAdmin(c), uid: c.UID}
}

// userClientProps are the properties of a user client that identify its
// process.
var userClientProps = []string{server.PropPID, server.PropUID, server.PropGID, server.PropComm}

// entry hides the process of another user's user client: its location
// (the pid) and its identifying properties.
func (v viewer) entry(e *serviceEntry) {
	if v.admin || e.Class != server.UserClientClass {
		return
	}
	if uid, ok := e.Properties[server.PropUID]; ok && uidEquals(uid, v.uid) {
		return
	}
	e.Name = ""
	for _, k := range userClientProps {
		delete(e.Properties, k)
	}
}

func uidEquals(v any, uid uint32) bool {
	switch v := v.(type) {
	case uint64:
		return v == uint64(uid)
	case int64:
		return v == int64(uid)
	case float64:
		return v == float64(uid)
	}
	return false
}

// event hides a user client's location in a monitor line: the lifecycle
// event does not say whose it is, so a reader sees none.
func (v viewer) event(e *monitorEvent) {
	if v.admin || e.Class != server.UserClientClass {
		return
	}
	e.Name = ""
}

var (
	// "userclient pid 4242 uid 1000 (scsiapp)": a user client's reference
	// tag in leak reports and why chains (userclient.Cred.Label).
	clientLabel = regexp.MustCompile(`userclient pid \d+ uid (\d+)(?: \([^)]*\))?`)
	// UserClient#12 "pid4242" (and JSON-escaped): a user client's name.
	clientName = regexp.MustCompile(`(UserClient#\d+) \\?"pid\d+\\?"`)
)

// text hides other users' processes in a leak report or a why chain.
func (v viewer) text(b []byte) []byte {
	if v.admin {
		return b
	}
	own := strconv.FormatUint(uint64(v.uid), 10)
	b = clientLabel.ReplaceAllFunc(b, func(m []byte) []byte {
		if string(clientLabel.FindSubmatch(m)[1]) == own {
			return m
		}
		return []byte("userclient of another user")
	})
	return clientName.ReplaceAll(b, []byte("$1"))
}

// explorerView is a viewer as the registry explorer asks it.
type explorerView struct{ v viewer }

var _ explorer.View = explorerView{}

func (x explorerView) Service(s *driver.Service, name *string, props map[string]any) {
	if s.Class() != server.UserClientClass {
		return
	}
	if props == nil {
		props = s.Properties().Map()
	}
	e := serviceEntry{Class: s.Class(), Name: *name, Properties: props}
	x.v.entry(&e)
	*name = e.Name
}

func (x explorerView) EventName(class, name string) string {
	e := monitorEvent{Class: class, Name: name}
	x.v.event(&e)
	return e.Name
}

func (x explorerView) Text(b []byte) []byte { return x.v.text(b) }

func pid() int { return os.Getpid() }
