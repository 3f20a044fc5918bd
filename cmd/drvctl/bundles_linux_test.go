package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// TestLoadNeedsAdmin: load is an administrative call, refused to a user
// who is not root nor an admin; the refused load loads nothing. drivers
// only reads: anyone may list them.
func TestLoadNeedsAdmin(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run drvctl as another user")
	}
	leaktest.Check(t)
	dir, err := os.MkdirTemp("", "drvctl-load-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	manifest := writeBundle(t, filepath.Join(dir, "b"), "mine", stickPersonality, false)
	require.NoError(t, os.Chmod(filepath.Join(dir, "b"), 0o755))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, socketGroup: nobody, sim: scn, drivers: "sg", logFormat: "text",
		logLevel: "error", trace: "all", termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second})

	out, err := asNobody(t, dir, "load", manifest, "--socket", sock).CombinedOutput()
	golden(t, filepath.Join("errors", "permission-load.txt"), errorOutput(exitCode(t, err), string(out), dir))
	out, err = asNobody(t, dir, "drivers", "--socket", sock).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "sg")
	for _, r := range driversJSON(t, sock).Drivers {
		require.NotEqual(t, "mine", r.Name)
	}
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
}
