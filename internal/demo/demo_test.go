package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// TestDemo runs what `make demo` runs, so that CI notices when the main job
// breaks: the binaries are built, every step must do what it says, and the
// daemon's shutdown must find nothing leaked.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon and an application")
	}
	leaktest.Check(t)
	bin := t.TempDir()
	// go test puts its own GOROOT/bin first in PATH (Go 1.19+).
	gobin, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is not in PATH")
	build := exec.Command(gobin, "build", "-o", bin+string(filepath.Separator), "../../cmd/drvctl", "../../examples/scsiapp")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", strings.TrimSpace(string(out)))

	// run prints to stdout: keep it for the failure message.
	r, w, err := os.Pipe()
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	printed := make(chan []byte)
	go func() {
		var b strings.Builder
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				printed <- []byte(b.String())
				return
			}
		}
	}()
	err = run(bin, "../../testdata/scenarios")
	os.Stdout = stdout
	w.Close()
	text := string(<-printed)
	r.Close()
	require.NoError(t, err, "the demo failed; it printed:\n%s", text)
	for _, want := range []string{
		"waiting up to 10s for usbstorage",
		"holding the device open",
		"user client freed",
		"shutdown complete: every service freed, nothing leaked",
	} {
		require.Contains(t, text, want)
	}
}
