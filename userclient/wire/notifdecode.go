package wire

import (
	"encoding/json"

	"github.com/drvkit/drvkit/internal/jsonscan"
)

// DecodeNotificationMsg decodes a notification's control payload. The
// server writes it by hand (AppendNotification) in one fixed shape,
//
//	{"handle":N,"type":"S"[,"service":N][,"cause":"S"][,"root_cause":"S"][,"detail":"S"]}
//
// and a fan-out makes every connected application decode one, so that
// shape is parsed here without reflection. Anything else — escapes,
// non-ASCII text, other key orders, whitespace, another server's encoder —
// goes to encoding/json, so the result is always what json.Unmarshal
// gives (FuzzDecodeNotificationMsg checks it). lastType, when it equals
// the decoded type, is returned instead of a new string: a stream of
// notifications of one type then costs no allocation for it.
func DecodeNotificationMsg(b []byte, lastType string) (NotificationMsg, error) {
	if m, ok := parseNotificationMsg(b, lastType); ok {
		return m, nil
	}
	var m NotificationMsg
	err := json.Unmarshal(b, &m)
	return m, err
}

// parseNotificationMsg is the fast path; ok is false for anything that is
// not exactly AppendNotification's shape.
func parseNotificationMsg(b []byte, lastType string) (m NotificationMsg, ok bool) {
	p := jsonscan.Scanner{B: b}
	if !p.Lit(`{"handle":`) {
		return m, false
	}
	if m.Handle, ok = p.Uint(); !ok {
		return m, false
	}
	if !p.Lit(`,"type":`) {
		return m, false
	}
	t, ok := p.Str()
	if !ok {
		return m, false
	}
	if string(t) == lastType {
		m.Type = lastType
	} else {
		m.Type = string(t)
	}
	if p.Lit(`,"service":`) {
		if m.Service, ok = p.Uint(); !ok {
			return m, false
		}
	}
	if p.Lit(`,"cause":`) {
		c, ok := p.Str()
		if !ok {
			return m, false
		}
		m.Cause = causeText(c)
	}
	if p.Lit(`,"root_cause":`) {
		c, ok := p.Str()
		if !ok {
			return m, false
		}
		m.RootCause = causeText(c)
	}
	if p.Lit(`,"detail":`) {
		d, ok := p.Str()
		if !ok {
			return m, false
		}
		m.Detail = string(d)
	}
	return m, p.Lit("}") && p.I == len(p.B)
}

// causeText returns the cause named by b, without an allocation for the
// causes the registry knows (a termination fans out to every holder).
func causeText(b []byte) string {
	for _, c := range knownCauses {
		if string(b) == c {
			return c
		}
	}
	return string(b)
}

var knownCauses = [...]string{"unplug", "unload", "admin", "provider", "shutdown", "crashed", "unknown"}
