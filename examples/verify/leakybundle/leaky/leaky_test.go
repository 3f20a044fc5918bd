package leaky_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/bundle"
	demo "github.com/drvkit/drvkit/internal/verifydemo"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/verify"
	"github.com/drvkit/drvkit/verify/bundlehost"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

// bundleOf builds the leakybundle executable into a directory its user
// (nobody) may read, next to the manifest file.
func bundleOf(t *testing.T, manifest string) *bundle.Manifest {
	if runtime.GOOS != "linux" {
		t.Skip("out-of-process drivers need Linux")
	}
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the bundle")
	}
	dir, err := os.MkdirTemp("", "drvkit-leakybundle-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	out, err := exec.Command(gotool, "build", "-o", filepath.Join(dir, "leakybundle"), "..").CombinedOutput()
	require.NoError(t, err, "%s", out)
	b, err := os.ReadFile(filepath.Join("..", manifest))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, manifest), b, 0o644))
	m, err := bundle.Load(filepath.Join(dir, manifest), bundle.Options{})
	require.NoError(t, err)
	return m
}

func verifyBundle(t *testing.T, m *bundle.Manifest, o verify.Options) *verify.Report {
	opts, err := bundlehost.Options(m, o)
	require.NoError(t, err)
	rep, err := verify.Verify(context.Background(), m.Entry(nil), opts)
	require.NoError(t, err)
	return rep
}

// TestVerifierFindsLeakyBundle: the reference the driver keeps lives in
// its own process, where the daemon cannot see it; the driver process
// reports it at stop, and the verifier names the buggy line — across the
// process boundary — and replays it.
func TestVerifierFindsLeakyBundle(t *testing.T) {
	m := bundleOf(t, "manifest.toml")
	rep := verifyBundle(t, m, verify.Options{Kinds: []string{"unplug", "driver-kill"}, Steps: []verify.Step{verify.StepCall}, Settle: 2 * time.Second})
	var b strings.Builder
	require.NoError(t, rep.WriteText(&b))
	out := b.String()
	require.False(t, rep.Passed(), out)
	f := rep.Failure
	require.NotNil(t, f, out)
	line, err := demo.BugLine("leaky.go", "// BUG:")
	require.NoError(t, err)
	require.NotNil(t, f.Culprit, out)
	require.Equal(t, "github.com/drvkit/drvkit/examples/verify/leakybundle/leaky.(*Driver).Start", f.Culprit.Func, out)
	require.Equal(t, line, f.Culprit.Line, out)
	require.Contains(t, out, "culprit: github.com/drvkit/drvkit/examples/verify/leakybundle/leaky.(*Driver).Start github.com/drvkit/drvkit/examples/verify/leakybundle/leaky/leaky.go:")
	require.Equal(t, "leak", f.Problems[0].Kind)
	require.Contains(t, f.Problems[0].Text, "of leakybundle (instance ")
	require.Contains(t, f.Problems[0].Text, "left 1 object(s) alive after its Stop")
	require.Contains(t, f.Problems[0].Text, "HIDDevice")
	require.Equal(t, "faults= teardown= io=1ms", f.Shrunk, "the leak needs no fault: every stop shows it")
	require.Equal(t, "drvctl verify leakybundle --replay 'faults= teardown= io=1ms'", f.Replay)

	again := verifyBundle(t, m, verify.Options{Replay: f.Shrunk, Settle: 2 * time.Second})
	require.NotNil(t, again.Failure)
	require.Equal(t, *f.Culprit, *again.Failure.Culprit)
}

// TestFixedBundlePasses: the fixed driver releases its provider in Stop.
func TestFixedBundlePasses(t *testing.T) {
	m := bundleOf(t, "fixed.toml")
	rep := verifyBundle(t, m, verify.Options{Kinds: []string{"unplug", "driver-kill"}, Steps: []verify.Step{verify.StepStart, verify.StepCall, verify.StepStop}, Settle: 2 * time.Second})
	var b strings.Builder
	require.NoError(t, rep.WriteText(&b))
	require.True(t, rep.Passed(), b.String())
}
