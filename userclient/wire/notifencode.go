package wire

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"strconv"
)

// AppendNotification appends the encoding of a notification frame for
// handle h to b, in one buffer and without reflection: it is the
// per-client cost of a fan-out. DecodeNotificationMsg parses its control
// payload without reflection too.
func AppendNotification(b []byte, h uint64, n Notification) []byte {
	start := len(b)
	// One allocation per frame: room for the header, the control payload
	// (its keys and numbers fit in 64 bytes) and the data.
	b = slices.Grow(b, 4+HeaderLen+64+len(n.Type)+len(n.Cause)+len(n.RootCause)+len(n.Detail)+len(n.Data))
	b = append(b, make([]byte, 4+HeaderLen)...)
	b = append(b, `{"handle":`...)
	b = strconv.AppendUint(b, h, 10)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, string(n.Type))
	if n.Service != 0 {
		b = append(b, `,"service":`...)
		b = strconv.AppendUint(b, n.Service, 10)
	}
	if n.Cause != "" {
		b = append(b, `,"cause":`...)
		b = appendJSONString(b, n.Cause)
	}
	if n.RootCause != "" {
		b = append(b, `,"root_cause":`...)
		b = appendJSONString(b, n.RootCause)
	}
	if n.Detail != "" {
		b = append(b, `,"detail":`...)
		b = appendJSONString(b, n.Detail)
	}
	b = append(b, '}')
	ctlLen := len(b) - start - 4 - HeaderLen
	b = append(b, n.Data...)
	f := b[start:]
	binary.BigEndian.PutUint32(f[0:], uint32(len(f)-4))
	f[4] = byte(TypeNotification)
	binary.BigEndian.PutUint32(f[16:], uint32(ctlLen))
	return b
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if ch := s[i]; ch < 0x20 || ch == '"' || ch == '\\' || ch >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
