package bundlehost_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// Nothing a verification makes may outlive the tests: objects,
// goroutines, driver processes.
func TestMain(m *testing.M) { leaktest.Main(m) }

// repo is the repository's root, from this package's directory.
const repo = "../.."

// sampleBundle copies the bundle at dir (relative to the repository) into
// a directory the drivers' user may read, building its Go executable from
// pkg first (""": none), and loads manifest (its file name there).
func sampleBundle(t *testing.T, dir, pkg, manifest string, files ...string) *bundle.Manifest {
	t.Helper()
	out, err := os.MkdirTemp("", "drvkit-verify-bundle-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(out, 0o755))
	t.Cleanup(func() { os.RemoveAll(out) })
	if pkg != "" {
		gotool, err := exec.LookPath("go")
		if err != nil {
			t.Skip("no go tool to build the bundle's executable")
		}
		b, err := exec.Command(gotool, "build", "-o", filepath.Join(out, filepath.Base(pkg)), "./"+filepath.Join(repo, pkg)).CombinedOutput()
		require.NoError(t, err, "%s", b)
	}
	for _, f := range append([]string{manifest}, files...) {
		b, err := os.ReadFile(filepath.Join(repo, dir, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(out, f), b, 0o755))
	}
	m, err := bundle.Load(filepath.Join(out, manifest), bundle.Options{})
	require.NoError(t, err)
	return m
}

// needPython skips where the Python sample cannot run: its interpreter
// must be on the drivers' PATH.
func needPython(t *testing.T) {
	for _, d := range []string{"/usr/local/bin", "/usr/bin", "/bin"} {
		if _, err := os.Stat(filepath.Join(d, "python3")); err == nil {
			return
		}
	}
	t.Skip("python3 is not in /usr/local/bin, /usr/bin or /bin: the Python sample driver cannot run")
}
