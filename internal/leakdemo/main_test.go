package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount"
)

// The demo must show both leaks it stages; it leaks for real, so each run
// adds four live objects, which the test accounts for.
func TestDemoReportsBothLeaks(t *testing.T) {
	var out, errOut bytes.Buffer
	// The demo leaks on purpose and its objects stay: count what earlier
	// runs (go test -count=N) left.
	before := len(refcount.LiveObjects())
	beforeCycles := len(refcount.Cycles())
	prof := filepath.Join(t.TempDir(), "refs.pb.gz")
	require.Equal(t, 0, run([]string{"-profile", prof}, &out, &errOut), errOut.String())
	text := out.String()
	require.Contains(t, text, fmt.Sprintf("refcount: %d live object(s)", before+4))
	require.Contains(t, text, "cycles (held only by each other):")
	require.Regexp(t, `why alive: "userclient pid 4242" → MassStorage#\d+ → USBDevice#\d+`, text)
	require.Regexp(t, `(main|leakdemo)\.openUserClient`, text)
	require.FileExists(t, prof)

	out.Reset()
	require.Equal(t, 0, run([]string{"-o", "json"}, &out, &errOut))
	var r refcount.Report
	require.NoError(t, json.Unmarshal(out.Bytes(), &r))
	require.Equal(t, refcount.SchemaVersion, r.SchemaVersion)
	require.Len(t, r.Objects, before+8, "two runs, four leaked objects each")
	require.Len(t, r.Cycles, beforeCycles+2)

	require.Equal(t, 2, run([]string{"-o", "xml"}, &out, &errOut))
}
