package leaktest_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The report of the example, kept as a golden file so that a change in the
// report format shows up in review.
func TestExampleReportGolden(t *testing.T) {
	var b strings.Builder
	leakOnPurpose(&b)
	path := filepath.Join("testdata", "example_report.golden")
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), b.String())
}
