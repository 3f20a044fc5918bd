package userclient

import (
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/userclient/wire"
)

// ErrReplyTooLarge: a streamed reply exceeded the client's limit
// (WithMaxReply). The request is cancelled on the server; the connection
// stays usable.
var ErrReplyTooLarge = errors.New("reply too large")

// assembly collects the part frames of one streamed reply (protocol
// version 3): each carries the next bytes of the reply's control and data,
// and the final reply frame the last ones.
type assembly struct {
	ctl, data []byte
	n         int   // bytes received, counted even after an overflow dropped them
	err       error // set once the reply is over the limit
}

// add appends a part frame's bytes; it reports false the first time the
// reply goes over limit (the bytes are released, the rest is counted only).
func (a *assembly) add(f *wire.Frame, limit int) bool {
	a.n += len(f.Control) + len(f.Data)
	if a.err != nil {
		return true
	}
	if a.n > limit {
		a.err = fmt.Errorf("%w: more than %d bytes", ErrReplyTooLarge, limit)
		a.ctl, a.data = nil, nil
		return false
	}
	a.ctl = append(a.ctl, f.Control...)
	a.data = append(a.data, f.Data...)
	return true
}

// finish adds the final reply frame and returns the whole reply (copies,
// never aliasing the decoder's buffer; nil when empty).
func (a *assembly) finish(f *wire.Frame, limit int) (ctl, data []byte, err error) {
	if a.err == nil && a.n == 0 {
		return clone(f.Control), clone(f.Data), nil
	}
	a.add(f, limit)
	if a.err != nil {
		return nil, nil, a.err
	}
	ctl, data = a.ctl, a.data
	if len(ctl) == 0 {
		ctl = nil
	}
	if len(data) == 0 {
		data = nil
	}
	*a = assembly{}
	return ctl, data, nil
}
