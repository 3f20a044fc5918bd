package strayjob_test

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/examples/verify/strayjob"
	demo "github.com/drvkit/drvkit/internal/verifydemo"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/verify"
	"github.com/drvkit/drvkit/verify/verifytest"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

// TestVerifierFindsStrayJob: verify.Run on the buggy driver, as its
// author would write it. It fails on purpose, so it runs in a child test
// binary (or when a replay is asked for: then it is the replay's target);
// the parent checks the report names the buggy line and that the replay
// command it prints reproduces the failure.
func TestVerifierFindsStrayJob(t *testing.T) {
	if verifytest.Replaying() || demo.InChild() {
		defer strayjob.Cleanup()
		verifytest.Run(t, strayjob.Entry, verify.Options{Call: &verify.Call{Method: strayjob.MethodRefresh}, Kinds: []string{"unplug", "app-kill"}, Steps: []verify.Step{verify.StepStart, verify.StepCall}, Settle: time.Second})
		return
	}
	out, err := demo.RunChild("TestVerifierFindsStrayJob")
	require.NoError(t, err)
	line, err := demo.BugLine("strayjob.go", "// BUG:")
	require.NoError(t, err)
	require.Contains(t, out, "culprit: github.com/drvkit/drvkit/examples/verify/strayjob.(*Driver).queue "+
		"github.com/drvkit/drvkit/examples/verify/strayjob/strayjob.go:"+strconv.Itoa(line)+"\n", out)
	require.Contains(t, out, "ErlangDisk#")
	replay := regexp.MustCompile(`(?m)replay:  (go test .*)$`).FindStringSubmatch(out)
	require.NotNil(t, replay, out)
	require.Contains(t, replay[1], "go test ./examples/verify/strayjob -run '^TestVerifierFindsStrayJob$'")
	again, err := demo.RunReplay(replay[1])
	require.NoError(t, err)
	require.Contains(t, again, "culprit: github.com/drvkit/drvkit/examples/verify/strayjob.(*Driver).queue ", again)
	require.Contains(t, again, "--- FAIL: TestVerifierFindsStrayJob/replay")
}

// TestFixedPasses: the fixed driver runs its jobs on the service's work queue.
func TestFixedPasses(t *testing.T) {
	rep := verifytest.Run(t, strayjob.Fixed, verify.Options{Call: &verify.Call{Method: strayjob.MethodRefresh}, Kinds: []string{"unplug", "app-kill", "unload", "terminate"},
		Steps: []verify.Step{verify.StepStart, verify.StepCall, verify.StepStop}})
	require.True(t, rep.Passed())
}
