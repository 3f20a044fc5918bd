package wire

import (
	"encoding/binary"
	"slices"
	"strconv"

	"github.com/drvkit/drvkit/internal/jsonscan"
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
	b = jsonscan.AppendString(b, string(n.Type))
	if n.Service != 0 {
		b = append(b, `,"service":`...)
		b = strconv.AppendUint(b, n.Service, 10)
	}
	if n.Cause != "" {
		b = append(b, `,"cause":`...)
		b = jsonscan.AppendString(b, n.Cause)
	}
	if n.RootCause != "" {
		b = append(b, `,"root_cause":`...)
		b = jsonscan.AppendString(b, n.RootCause)
	}
	if n.Detail != "" {
		b = append(b, `,"detail":`...)
		b = jsonscan.AppendString(b, n.Detail)
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
