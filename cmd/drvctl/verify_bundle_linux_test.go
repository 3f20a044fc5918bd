package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// publicBundle copies the files of a bundle directory (relative to the
// repository) where the drivers' user (nobody) may read them, building
// its Go executable from pkg first ("": none).
func publicBundle(t *testing.T, dir, pkg string, files ...string) string {
	t.Helper()
	out, err := os.MkdirTemp("", "drvkit-verify-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(out, 0o755))
	t.Cleanup(func() { os.RemoveAll(out) })
	if pkg != "" {
		gotool, err := exec.LookPath("go")
		if err != nil {
			t.Skip("no go tool to build the bundle")
		}
		b, err := exec.Command(gotool, "build", "-o", filepath.Join(out, filepath.Base(pkg)), "../../"+pkg).CombinedOutput()
		require.NoError(t, err, "%s", b)
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("..", "..", dir, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(out, f), b, 0o755))
	}
	return out
}

// TestVerifyBundleGolden: drvctl verify on the Python sample bundle, out
// of process: the driver-kill kind applies and kills its process.
func TestVerifyBundleGolden(t *testing.T) {
	found := false
	for _, d := range []string{"/usr/local/bin", "/usr/bin", "/bin"} {
		if _, err := os.Stat(filepath.Join(d, "python3")); err == nil {
			found = true
		}
	}
	if !found {
		t.Skip("python3 is not on the drivers' PATH")
	}
	leaktest.Check(t)
	dir := publicBundle(t, "examples/bundles/pycounter", "", "manifest.toml", "driver.py")
	e, out, errb := testEnv(nil, 0)
	code := run([]string{"verify", dir, "--steps", "start,call", "--faults", "unplug,app-kill,driver-kill", "--random", "0"}, e)
	require.Equal(t, exitOK, code, "stderr: %s\nstdout: %s", errb, out)
	golden(t, "verify-pycounter.txt", []byte(normalizeVerify(out.String())))
}

// TestVerifyBundleFails: drvctl verify on the buggy Go bundle fails,
// names the line of the driver's code that keeps the reference (reported
// by the driver process), and its replay command fails the same way.
func TestVerifyBundleFails(t *testing.T) {
	leaktest.Check(t)
	dir := publicBundle(t, "examples/verify/leakybundle", "examples/verify/leakybundle", "manifest.toml")
	e, out, errb := testEnv(nil, 0)
	code := run([]string{"verify", dir, "--steps", "call", "--faults", "unplug"}, e)
	require.Equal(t, exitFail, code, "stderr: %s\nstdout: %s", errb, out)
	require.Equal(t, "drvctl verify: the driver failed verification\n", errb.String())
	culprit := regexp.MustCompile(`(?m)^culprit: github.com/drvkit/drvkit/examples/verify/leakybundle/leaky\.\(\*Driver\)\.Start github.com/drvkit/drvkit/examples/verify/leakybundle/leaky/leaky\.go:\d+$`)
	require.Regexp(t, culprit, out.String())
	require.Contains(t, out.String(), "FAIL: verify leakybundle on hid-keyboard 1209:0001\n")
	replay := regexp.MustCompile(`(?m)^replay:  drvctl verify (\S+) --replay '([^']*)'$`).FindStringSubmatch(out.String())
	require.NotNil(t, replay, out.String())
	require.Equal(t, dir, replay[1])

	e, again, _ := testEnv(nil, 0)
	code = run([]string{"verify", replay[1], "--replay", replay[2]}, e)
	require.Equal(t, exitFail, code, again.String())
	require.Regexp(t, culprit, again.String())
	require.True(t, strings.HasPrefix(again.String(), "FAIL: verify leakybundle"), again.String())
}
