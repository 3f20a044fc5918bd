package hotplugtest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug/hotplugtest"
)

// escape is a dump whose links, resolved where they land rather than where
// their lines name them, point outside the tree: x/y/z is a link to t, so
// the link written as x/y/z/l sits in t and its "../../../u" leaves it.
const escape = "SYSDIR /sys/x/y/z -> /sys/t\nSYSLINK /sys/x/y/z/l -> /sys/u\nSYSATTR /sys/x/y/z/l/owned=1\n"

// builds a dump into a directory inside a fresh one and reports whether
// anything was written next to the tree.
func buildContained(t *testing.T, dump string) error {
	outer := t.TempDir()
	err := hotplugtest.BuildSysfs(filepath.Join(outer, "sys"), strings.NewReader(dump))
	ents, rerr := os.ReadDir(outer)
	require.NoError(t, rerr)
	require.Len(t, ents, 1, "BuildSysfs wrote outside its directory")
	require.Equal(t, "sys", ents[0].Name())
	return err
}

func TestBuildSysfsStaysInside(t *testing.T) {
	err := buildContained(t, escape)
	require.ErrorContains(t, err, "sysfs dump line 3")
}

// FuzzBuildSysfs: any dump builds or fails with an error, never panics, and
// never writes outside the directory it was given.
func FuzzBuildSysfs(f *testing.F) {
	f.Add([]byte(escape))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := buildContained(t, string(data))
		if err != nil {
			require.NotEmpty(t, err.Error())
		}
	})
}
