//go:build !linux

package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/userclient"
)

// Embed would return an in-process client of s; it needs Linux (the
// server identifies every peer by its SO_PEERCRED credentials), so here it
// fails with an *OpError matching errors.ErrUnsupported.
func (s *Server) Embed(ctx context.Context, opts ...userclient.DialOption) (*userclient.Client, error) {
	return nil, &OpError{Op: "embed", Err: fmt.Errorf("in-process clients need Linux: %w", errors.ErrUnsupported)}
}
