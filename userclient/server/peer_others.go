//go:build !linux

package server

import (
	"errors"
	"io"
	"net"

	"github.com/drvkit/drvkit/userclient"
)

var errUnsupported = errors.New("userclient: peer credentials need Linux")

func peerCred(*net.UnixConn) (userclient.Cred, error) { return userclient.Cred{}, errUnsupported }

func watchPeer(*net.UnixConn, int32, func()) (io.Closer, error) { return nil, errUnsupported }
