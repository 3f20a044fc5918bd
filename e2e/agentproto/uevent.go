package agentproto

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
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

// ParseUevent decodes a kernel uevent datagram: "ACTION@DEVPATH\0" followed
// by NUL-terminated KEY=VALUE strings, all valid UTF-8 (the wire is JSON). Messages from udev's monitor (which
// start with "libudev\0") are rejected: only the kernel's format is valid.
func ParseUevent(b []byte) (*Uevent, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty uevent", ErrMalformed)
	}
	if !utf8.Valid(b) {
		// JSON would replace the bad bytes on the way to the host: the
		// event would arrive altered. Say so instead.
		return nil, fmt.Errorf("%w: uevent is not valid UTF-8: %.80q", ErrMalformed, b)
	}
	parts := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	head := string(parts[0])
	at := strings.IndexByte(head, '@')
	if at <= 0 || at == len(head)-1 {
		return nil, fmt.Errorf("%w: uevent header %.80q is not ACTION@DEVPATH", ErrMalformed, head)
	}
	u := &Uevent{Action: head[:at], Devpath: head[at+1:], Env: make(map[string]string, len(parts))}
	for _, p := range parts[1:] {
		k, v, ok := bytes.Cut(p, []byte{'='})
		if !ok || len(k) == 0 {
			return nil, fmt.Errorf("%w: uevent %s: field %.80q is not KEY=VALUE", ErrMalformed, head, p)
		}
		u.Env[string(k)] = string(v)
	}
	if a, ok := u.Env["ACTION"]; ok && a != u.Action {
		return nil, fmt.Errorf("%w: uevent %s: ACTION=%s disagrees with the header", ErrMalformed, head, a)
	}
	if d, ok := u.Env["DEVPATH"]; ok && d != u.Devpath {
		return nil, fmt.Errorf("%w: uevent %s: DEVPATH=%s disagrees with the header", ErrMalformed, head, d)
	}
	u.Subsystem = u.Env["SUBSYSTEM"]
	if s, ok := u.Env["SEQNUM"]; ok {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: uevent %s: SEQNUM %q", ErrMalformed, head, s)
		}
		u.Seqnum = n
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
