//go:build !linux

package devgrant

import (
	"net"
	"os"
)

func socketPair(string) (*net.UnixConn, *os.File, error) { return nil, nil, ErrNotSupported }

func socketConn(*os.File) (*net.UnixConn, error) { return nil, ErrNotSupported }

func openNode(string) (*os.File, error) { return nil, ErrNotSupported }

func dupFile(*os.File) (*os.File, error) { return nil, ErrNotSupported }
