package agentproto

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/drvkit/drvkit/hotplug"
)

// Uevent is one kernel uevent as the guest received it.
type Uevent struct {
	Action    string            `json:"action"`
	Devpath   string            `json:"devpath"`
	Subsystem string            `json:"subsystem,omitempty"`
	Seqnum    uint64            `json:"seqnum,omitempty"`
	Env       map[string]string `json:"env"`
	SenderPID uint32            `json:"sender_pid"` // netlink port: 0 for the kernel
	TimeNs    int64             `json:"time_ns"`    // guest CLOCK_MONOTONIC at receipt
	// Raw is the datagram as received (the agent sets it; ParseUevent
	// does not), so that a host can record byte-exact captures.
	Raw []byte `json:"raw,omitempty"`
}

// Get returns the value of key ("ACTION", "PRODUCT", …).
func (u *Uevent) Get(key string) string { return u.Env[key] }

func (u *Uevent) String() string {
	s := u.Action + "@" + u.Devpath
	if u.Subsystem != "" {
		s += " (" + u.Subsystem + ")"
	}
	return s
}

// ParseUevent decodes a kernel uevent datagram with hotplug.Parse (so the
// guest checks the same format the daemon does) and requires it to be valid
// UTF-8, since the wire to the host is JSON. Messages from udev's monitor
// (which start with "libudev\0") are rejected: only the kernel's format is
// valid.
func ParseUevent(b []byte) (*Uevent, error) {
	if !utf8.Valid(b) {
		// JSON would replace the bad bytes on the way to the host: the
		// event would arrive altered. Say so instead.
		return nil, fmt.Errorf("%w: uevent is not valid UTF-8: %.80q", ErrMalformed, b)
	}
	ev, err := hotplug.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	u := &Uevent{Action: ev.Action.String(), Devpath: ev.DevPath, Subsystem: ev.Subsystem, Seqnum: ev.Seqnum,
		Env: map[string]string{}}
	for k, v := range ev.Env() {
		u.Env[k] = v
	}
	return u, nil
}

// Match selects uevents. Empty fields match anything; Env values must be
// equal, or start with the given prefix when they end in "*".
type Match struct {
	Action    string            `json:"action,omitempty"`
	Subsystem string            `json:"subsystem,omitempty"`
	Devpath   string            `json:"devpath,omitempty"` // substring of DEVPATH
	Env       map[string]string `json:"env,omitempty"`
}

// Matches reports whether u is selected.
func (m Match) Matches(u *Uevent) bool {
	if m.Action != "" && u.Action != m.Action {
		return false
	}
	if m.Subsystem != "" && u.Subsystem != m.Subsystem {
		return false
	}
	if m.Devpath != "" && !strings.Contains(u.Devpath, m.Devpath) {
		return false
	}
	for k, want := range m.Env {
		got, ok := u.Env[k]
		if !ok {
			return false
		}
		if p, isPrefix := strings.CutSuffix(want, "*"); isPrefix {
			if !strings.HasPrefix(got, p) {
				return false
			}
		} else if got != want {
			return false
		}
	}
	return true
}

func (m Match) String() string {
	var parts []string
	if m.Action != "" {
		parts = append(parts, "action="+m.Action)
	}
	if m.Subsystem != "" {
		parts = append(parts, "subsystem="+m.Subsystem)
	}
	if m.Devpath != "" {
		parts = append(parts, "devpath~"+m.Devpath)
	}
	for k, v := range m.Env {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}
