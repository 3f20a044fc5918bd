package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestResults(t *testing.T) {
	r := results{}
	r.add("base", []byte("goos: linux\nBenchmarkX/a-2 \t 300\t 8000 ns/op\t 1.30 x-floor-p50\t 1.40 x-floor-cpu\nPASS\n"))
	r.add("new", []byte("BenchmarkX/a-2 \t 300\t 7000 ns/op\t 1.20 x-floor-p50\t 1.25 x-floor-cpu\n"))
	r.add("base", []byte("BenchmarkX/a-2 \t 300\t 9000 ns/op\t 1.34 x-floor-p50\t 1.38 x-floor-cpu\n"))
	r.add("new", []byte("BenchmarkX/a-2 \t 300\t 7400 ns/op\t 1.22 x-floor-p50\t 1.27 x-floor-cpu\nBenchmarkX/a-2 --- FAIL\nok \tpkg\t1.0s\n"))
	var b bytes.Buffer
	require.NoError(t, r.print(&b, []string{"x-floor-p50", "ns/op"}))
	require.Equal(t, "BenchmarkX/a-2\n"+
		"  ns/op                   base 8500 [8000–9000] (2)  new 7200 [7000–7400] (2)\n"+
		"  x-floor-p50             base 1.32 [1.3–1.34] (2)  new 1.21 [1.2–1.22] (2)\n", b.String())
	require.Error(t, results{}.print(&b, nil), "no benchmark lines")
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		require.Equal(t, c.want, median(c.in))
	}
}

// BenchmarkSample is what TestRunAgainstHEAD compares.
func BenchmarkSample(b *testing.B) {
	for b.Loop() {
	}
	b.ReportMetric(1, "x-sample")
}

// TestRunAgainstHEAD: the whole tool, on this package's BenchmarkSample,
// at HEAD (a worktree) and in the working tree.
func TestRunAgainstHEAD(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two test binaries")
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	t.Chdir(strings.TrimSpace(string(top)))
	var b bytes.Buffer
	require.NoError(t, run(&b, "HEAD", "./internal/benchab", "^BenchmarkSample$", "20x", 2, []string{"x-sample"}))
	require.Regexp(t, `(?m)^BenchmarkSample(-\d+)?\n  x-sample +base 1 \[1–1\] \(2\)  new 1 \[1–1\] \(2\)\n$`, b.String())
	out, err := exec.Command("git", "worktree", "list").Output()
	require.NoError(t, err)
	require.NotContains(t, string(out), "benchab-", "the worktree is removed")
}
