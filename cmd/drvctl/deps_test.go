package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDaemonLinksNoTestCode: `serve --sim` runs on the simulator packages
// (hotplug/sim, usbsim, scsisim, hidsim), never on a test fake or on
// package testing.
func TestDaemonLinksNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err)
	for _, dep := range strings.Fields(string(out)) {
		ours := strings.HasPrefix(dep, "github.com/drvkit/drvkit/")
		require.False(t, dep == "testing" || ours && strings.HasSuffix(dep, "test"), "drvctl links %s", dep)
	}
	require.Contains(t, string(out), "github.com/drvkit/drvkit/hotplug/sim\n")
}
