//go:build !linux

package host_test

import "testing"

// echoFloor needs Linux (SOCK_SEQPACKET), as out-of-process drivers do.
type echoFloor struct{}

func newEchoFloor(b *testing.B, _ []byte) *echoFloor {
	b.Skip("out-of-process drivers need Linux")
	return nil
}

func (*echoFloor) roundTrip(*testing.B) {}
