package usbhold

import (
	"context"

	"github.com/drvkit/drvkit/hotplug"
)

// Source returns src with every event shown to h first (see
// [Hold.Event]), so that an interface is decided before the bridge
// publishes its nub and a driver tries to claim it.
func (h *Hold) Source(src hotplug.Source) hotplug.Source { return &source{Source: src, h: h} }

type source struct {
	hotplug.Source
	h *Hold
}

var _ hotplug.Source = (*source)(nil)

func (s *source) Next(ctx context.Context) (hotplug.Event, error) {
	ev, err := s.Source.Next(ctx)
	if err == nil {
		s.h.Event(&ev)
	}
	return ev, err
}
