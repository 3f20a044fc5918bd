package server

import (
	"context"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/userclient/wire"

	"github.com/drvkit/drvkit/userclient"
)

// Embed returns an in-process client of s with exactly the semantics of a
// socket client — policy (as this process's credentials), bounded
// notification buffering, sessions and their cleanup — because it is one:
// it talks to s over a socketpair. Cancelling ctx is the client dying:
// every session it opened gets ClientDied, as if the process had crashed.
// Linux only: elsewhere it fails with an error matching errors.ErrUnsupported.
func (s *Server) Embed(ctx context.Context, opts ...userclient.DialOption) (*userclient.Client, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &OpError{Op: "embed", Err: err}
	}
	srvConn, err := fileConn(fds[0], "userclient-embed-server")
	if err != nil {
		unix.Close(fds[1])
		return nil, &OpError{Op: "embed", Err: err}
	}
	cliConn, err := fileConn(fds[1], "userclient-embed-client")
	if err != nil {
		srvConn.Close()
		return nil, &OpError{Op: "embed", Err: err}
	}
	cred, err := peerCred(srvConn)
	if err != nil {
		srvConn.Close()
		cliConn.Close()
		return nil, &OpError{Op: "embed", Err: err}
	}
	c := newConn(s, srvConn, cred)
	c.embedded = true
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		srvConn.Close()
		cliConn.Close()
		return nil, &OpError{Op: "embed", Err: wire.ErrClosed}
	}
	// Counted, not limited: the embedder is the process itself.
	s.conns[c] = struct{}{}
	c.user = s.addConnLocked(cred.UID)
	s.incomplete++
	s.wg.Add(1)
	s.mu.Unlock()
	go c.serve()
	stop := context.AfterFunc(ctx, func() { c.fail(ErrClientDied, wire.CodeClosed) })
	go func() { <-c.quit; stop() }()
	cl, err := userclient.NewClient(ctx, cliConn, opts...)
	if err != nil {
		cliConn.Close()
		return nil, &OpError{Op: "embed", Err: err}
	}
	return cl, nil
}

func fileConn(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close() // FileConn dups it
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return nc.(*net.UnixConn), nil
}
