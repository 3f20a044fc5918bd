package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// TestServeSetupFailuresLeakNothing: serve refusing to start (a bad driver
// name, a socket it cannot create, a scenario that does not parse) returns
// a clear error and leaves no registry, worker or simulator behind.
func TestServeSetupFailuresLeakNothing(t *testing.T) {
	dir := t.TempDir()
	scn := filepath.Join(dir, "ok.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	bad := filepath.Join(dir, "bad.scn")
	require.NoError(t, os.WriteFile(bad, []byte("unplug 9-9\n"), 0o644))
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown driver", []string{"serve", "--sim", scn, "--drivers", "bogus", "--socket", filepath.Join(dir, "a.sock")}, exitUsage, `unknown driver "bogus"`},
		{"socket dir missing", []string{"serve", "--sim", scn, "--socket", filepath.Join(dir, "nowhere", "b.sock")}, exitFail, "drvctl serve: listen " + filepath.Join(dir, "nowhere", "b.sock") + ": bind: no such file or directory\n"},
		{"scenario refused", []string{"serve", "--sim", bad, "--socket", filepath.Join(dir, "c.sock")}, exitFail, "unplug: no device at port 9-9"},
		{"scenario missing", []string{"serve", "--sim", filepath.Join(dir, "none.scn"), "--socket", filepath.Join(dir, "d.sock")}, exitFail, "none.scn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			e, _, errb := testEnv(nil, 0)
			require.Equal(t, tt.code, run(tt.args, e), errb.String())
			require.Contains(t, errb.String(), tt.want)
		})
	}
}

// inProcessDaemon is `drvctl serve` running in the test's own process, so
// that a test can reach its registry and monitor hub.
type inProcessDaemon struct {
	*daemon
	log    syncBuffer // serve's stderr
	cancel context.CancelFunc
	served chan error
	once   sync.Once
	err    error
}

// startServe runs serve with o and returns once it accepts connections.
// stop, which cleanup also calls, shuts it down and returns serve's result.
func startServe(t testing.TB, o serveOptions) *inProcessDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcessDaemon{cancel: cancel, served: make(chan error, 1)}
	readyc := make(chan *daemon, 1)
	go func() { p.served <- serve(ctx, o, &p.log, func(d *daemon) { readyc <- d }) }()
	select {
	case p.daemon = <-readyc:
	case err := <-p.served:
		cancel()
		t.Fatalf("serve: %v\n%s", err, p.log.Bytes())
	}
	t.Cleanup(func() { _ = p.stop() })
	return p
}

func (p *inProcessDaemon) stop() error {
	p.once.Do(func() {
		p.cancel()
		p.err = <-p.served
	})
	return p.err
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }
