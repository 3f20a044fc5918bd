package hotplug

import (
	"context"
	"io"
)

// Source produces events. Next blocks until an event is available, ctx is
// done, or the source is closed (ErrClosed); a finite source (coldplug, a
// scenario) ends with io.EOF. Next is for one consumer goroutine; Close may
// be called from any goroutine and unblocks a pending Next.
type Source interface {
	Next(ctx context.Context) (Event, error)
	Close() error
}

var errEOF = io.EOF
