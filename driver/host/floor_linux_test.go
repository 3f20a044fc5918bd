package host_test

import (
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/host/wire"
)

// echoFloor is a child process (the test binary in echo mode) that echoes
// every message it reads on a SOCK_SEQPACKET socketpair: one round trip
// is what crossing to a driver process and back costs at least.
type echoFloor struct {
	c   *net.UnixConn
	req []byte
	buf []byte
	cmd *exec.Cmd
}

func newEchoFloor(b *testing.B, req []byte) *echoFloor {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	require.NoError(b, err)
	mine, theirs := os.NewFile(uintptr(fds[0]), "floor"), os.NewFile(uintptr(fds[1]), "floor-child")
	defer theirs.Close()
	nc, err := net.FileConn(mine)
	mine.Close()
	require.NoError(b, err)
	f := &echoFloor{c: nc.(*net.UnixConn), req: req, buf: make([]byte, wire.MaxMessage)}
	f.cmd = exec.Command(testExe, driverArg, "echo")
	f.cmd.ExtraFiles = []*os.File{theirs}
	f.cmd.Stderr = os.Stderr
	require.NoError(b, f.cmd.Start())
	b.Cleanup(func() {
		f.c.Close() // the child reads EOF and exits
		_ = f.cmd.Wait()
	})
	return f
}

func (f *echoFloor) roundTrip(b *testing.B) {
	if _, err := f.c.Write(f.req); err != nil {
		b.Fatal(err)
	}
	if n, err := f.c.Read(f.buf); err != nil || n != len(f.req) {
		b.Fatal(n, err)
	}
}
