package main

import (
	"os"
	"path/filepath"
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
		{"socket dir missing", []string{"serve", "--sim", scn, "--socket", filepath.Join(dir, "nowhere", "b.sock")}, exitFail, "socket " + filepath.Join(dir, "nowhere", "b.sock")},
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
