package userclient

import (
	"errors"
	"fmt"
	"io"

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
	// sink, when set, gets the control bytes as they come instead of ctl
	// (AdminTo); the limit then applies to the data alone.
	sink io.Writer
	n    int   // bytes received, counted even after an overflow dropped them
	err  error // set once the reply is over the limit
}

// add appends a part frame's bytes; it reports false the first time the
// reply goes over limit (the bytes are released, the rest is counted only).
func (a *assembly) add(f *wire.Frame, limit int) bool {
	if a.sink != nil {
		return a.addTo(f, limit)
	}
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
	if a.sink != nil {
		a.addTo(f, limit)
		data, err = a.data, a.err
		*a = assembly{}
		if err != nil || len(data) == 0 {
			data = nil
		}
		return nil, data, err
	}
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

// addTo is add with a sink: the control bytes are written through, the
// data kept. A failed write ends the reply like an overflow does.
func (a *assembly) addTo(f *wire.Frame, limit int) bool {
	if a.err != nil {
		return true
	}
	if len(f.Control) > 0 {
		if _, err := a.sink.Write(f.Control); err != nil {
			a.err, a.data = err, nil
			return false
		}
	}
	a.n += len(f.Data)
	if a.n > limit {
		a.err = fmt.Errorf("%w: more than %d bytes of data", ErrReplyTooLarge, limit)
		a.data = nil
		return false
	}
	a.data = append(a.data, f.Data...)
	return true
}
