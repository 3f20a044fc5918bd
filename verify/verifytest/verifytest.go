// Package verifytest is the Driver Verifier's go test integration:
// verifytest.Run(t, entry, opts) runs verify.Verify with each schedule as a
// subtest and fails the test with the report, its culprit and a
// `go test … -verify.replay=…` command. It is separate from package verify
// so that programs using the verifier (drvctl) do not link the testing
// package.
package verifytest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/verify"
)

// Flags of a test binary that calls Run.
var (
	flagReplay = flag.String("verify.replay", "", "verify.Run: run only this schedule (printed by a failure)")
	flagBudget = flag.Duration("verify.budget", 0, "verify.Run: time for random schedules (overrides the test's)")
	flagRandom = flag.Int("verify.random", -1, "verify.Run: number of random schedules (overrides the test's)")
	flagSeed   = flag.Uint64("verify.seed", 0, "verify.Run: first random seed")
)

// Run verifies entry's driver inside a Go test: each schedule is a
// subtest (unplug@start, panic@stop, seed 7, …), and a failure fails the
// test with the full report, its culprit and the command that replays it
// (go test -run … -verify.replay=…). It returns the report.
//
// Under -short, Run keeps the systematic pairs and drops the random
// schedules unless -verify.budget or -verify.random asks for them.
func Run(t *testing.T, entry drivertable.Entry, opts verify.Options) *verify.Report {
	t.Helper()
	if *flagReplay != "" {
		opts.Replay = *flagReplay
	}
	if *flagBudget > 0 {
		opts.Budget = *flagBudget
	} else if testing.Short() {
		opts.Budget = 0
	}
	if *flagRandom >= 0 {
		opts.Random = *flagRandom
	} else if testing.Short() && *flagBudget == 0 {
		opts.Random = 0
	}
	if *flagSeed != 0 {
		opts.Seed = *flagSeed
	}
	top := t.Name()
	if opts.ReplayCommand == nil {
		pkg := packageDir()
		opts.ReplayCommand = func(s verify.Schedule) string {
			return fmt.Sprintf("go test %s -run '^%s$' -count=1 -verify.replay='%s'", pkg, regexpQuote(top), s)
		}
	}
	opts.Each = func(name string, run func() verify.Result) verify.Result {
		var res verify.Result
		t.Run(name, func(st *testing.T) {
			res = run()
			if res.Failed() {
				var b strings.Builder
				for _, p := range res.Problems {
					b.WriteString(p.String() + "\n")
				}
				st.Errorf("schedule %s failed:\n%s", res.Schedule, b.String())
			}
		})
		return res
	}
	rep, err := verify.Verify(context.Background(), entry, opts)
	if err != nil {
		t.Fatalf("verify %s: %v", entry.Name, err)
	}
	if rep.Failure != nil {
		var b strings.Builder
		_ = rep.WriteText(&b)
		t.Errorf("%s", b.String())
	} else {
		t.Logf("verify %s on %s: %d runs (%d random), %s, %v", rep.Driver, rep.Device, rep.Runs, rep.Random, rep.CoverageLine(), rep.Elapsed.Round(time.Millisecond))
	}
	return rep
}

func regexpQuote(name string) string {
	r := strings.NewReplacer(".", `\.`, "(", `\(`, ")", `\)`, "[", `\[`, "]", `\]`, "+", `\+`, "*", `\*`, "?", `\?`, "^", `\^`, "$", `\$`, "|", `\|`)
	return r.Replace(name)
}

// packageDir is the test's package as go test names it from the module
// root ("./examples/verify/leakyclient"), or "." outside a module.
func packageDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			rel, err := filepath.Rel(dir, wd)
			if err != nil || rel == "." {
				return "."
			}
			return "./" + filepath.ToSlash(rel)
		}
		if filepath.Dir(dir) == dir {
			return "."
		}
	}
}

// Replaying reports whether the test binary was given -verify.replay: a
// test that shows a known failure on purpose runs it then, so that the
// replay command it printed reproduces the failure.
func Replaying() bool { return *flagReplay != "" }
