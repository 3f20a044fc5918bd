//go:build !linux

package server

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/drvkit/drvkit/userclient"
)

var errUnsupported = fmt.Errorf("peer credentials need Linux: %w", errors.ErrUnsupported)

func peerCred(*net.UnixConn) (userclient.Cred, error) { return userclient.Cred{}, errUnsupported }

func watchPeer(*net.UnixConn, int32, func()) (io.Closer, error) { return nil, errUnsupported }
