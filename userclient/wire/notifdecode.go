package wire

import "encoding/json"

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
	p := notifParser{b: b}
	if !p.lit(`{"handle":`) {
		return m, false
	}
	if m.Handle, ok = p.uint(); !ok {
		return m, false
	}
	if !p.lit(`,"type":`) {
		return m, false
	}
	t, ok := p.str()
	if !ok {
		return m, false
	}
	if string(t) == lastType {
		m.Type = lastType
	} else {
		m.Type = string(t)
	}
	if p.lit(`,"service":`) {
		if m.Service, ok = p.uint(); !ok {
			return m, false
		}
	}
	if p.lit(`,"cause":`) {
		c, ok := p.str()
		if !ok {
			return m, false
		}
		m.Cause = causeText(c)
	}
	if p.lit(`,"root_cause":`) {
		c, ok := p.str()
		if !ok {
			return m, false
		}
		m.RootCause = causeText(c)
	}
	if p.lit(`,"detail":`) {
		d, ok := p.str()
		if !ok {
			return m, false
		}
		m.Detail = string(d)
	}
	return m, p.lit("}") && p.i == len(p.b)
}

type notifParser struct {
	b []byte
	i int
}

// lit consumes s if the input continues with it.
func (p *notifParser) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// uint consumes a JSON number that is a uint64 in canonical form: no sign,
// no leading zero, no fraction or exponent, no overflow (encoding/json
// rejects those for a uint64 field, or accepts forms this does not).
func (p *notifParser) uint() (uint64, bool) {
	start := p.i
	var v uint64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		d := uint64(p.b[p.i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
		p.i++
	}
	n := p.i - start
	if n == 0 || (n > 1 && p.b[start] == '0') {
		return 0, false
	}
	return v, true
}

// str consumes a JSON string of printable ASCII without escapes, the form
// appendJSONString writes when it needs no encoding/json, and returns its
// contents (aliasing the input).
func (p *notifParser) str() ([]byte, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	start := p.i + 1
	for i := start; i < len(p.b); i++ {
		switch ch := p.b[i]; {
		case ch == '"':
			p.i = i + 1
			return p.b[start:i], true
		case ch < 0x20 || ch == '\\' || ch >= 0x80:
			return nil, false
		}
	}
	return nil, false
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
