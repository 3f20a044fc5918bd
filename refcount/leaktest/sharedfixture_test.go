package leaktest_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// goTool is the go command of the toolchain running the test: go test puts
// its GOROOT/bin first in PATH (Go 1.19+).
func goTool(t *testing.T) string {
	p, err := exec.LookPath("go")
	require.NoError(t, err, "no go command to run the shared-fixture package")
	return p
}

// lineOf is the line number of the first line of file containing marker.
func lineOf(t *testing.T, file, marker string) int {
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if strings.Contains(sc.Text(), marker) {
			return n
		}
	}
	t.Fatalf("%s has no %q", file, marker)
	return 0
}

// The CI shape: one registry, hotplug bridge and simulator built in
// TestMain, two parallel tests plugging their own devices through the
// simulator with leaktest.Context. Exactly the leaky test fails, and its
// failure names the leaking line; the clean one passes although its
// objects were made on the fixture's goroutines while the leaky test ran.
func TestSharedFixture(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a test binary")
	}
	dir := filepath.Join("testdata", "sharedfixture")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(t), "test", "-count=1", "-v", "./"+dir)
	cmd.Env = append(os.Environ(), "DRVKIT_REFTRACE=")
	out, err := cmd.CombinedOutput()
	text := string(out)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the leaky test must fail the package:\n%s", text)

	require.Contains(t, text, "--- PASS: TestClean", text)
	require.Contains(t, text, "--- FAIL: TestLeaky", text)
	require.NotContains(t, text, "--- FAIL: TestClean", text)
	require.Equal(t, 1, strings.Count(text, "--- FAIL:"), text)

	line := lineOf(t, filepath.Join(dir, "fixture_test.go"), "// LEAK")
	require.Regexp(t, regexp.QuoteMeta("retained at sharedfixture.keepProvider fixture_test.go:"+strconv.Itoa(line)), text)
	require.Contains(t, text, "attributed to TestLeaky", "the heading must not claim the test created what the fixture made")
	require.NotContains(t, text, "created by TestLeaky")
	require.NotContains(t, text, "by time window", "every fixture object carries a label")
}
