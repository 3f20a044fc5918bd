//go:build !linux

package devgrant

import (
	"net"
	"os"
	"syscall"
)

func socketPair(string) (*net.UnixConn, *os.File, error) { return nil, nil, ErrNotSupported }

func socketConn(*os.File) (*net.UnixConn, error) { return nil, ErrNotSupported }

func openNode(string) (*os.File, error) { return nil, ErrNotSupported }

func dupFile(*os.File) (*os.File, error) { return nil, ErrNotSupported }

type packetReader struct{}

func newPacketReader(syscall.RawConn, int) *packetReader { return &packetReader{} }

func (*packetReader) next() ([]byte, error) { return nil, ErrNotSupported }
