package userclient

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// An application that only dials the daemon must not link the daemon: the
// registry, reference counting, the transports, the fault injector, the
// hotplug machinery or the server. The packages an application uses are
// checked the way a build sees them, with go list -deps, on Linux and on
// a platform without the Linux-only files.
func TestClientLinksNoDaemon(t *testing.T) {
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "go list needs the go command")
	const mod = "github.com/drvkit/drvkit/"
	forbidden := map[string]bool{}
	for _, p := range []string{"driver", "driver/usb", "driver/scsi", "internal/faultinject", "userclient/server", "refcount", "hotplug"} {
		forbidden[mod+p] = true
	}
	// Whole trees: nothing under them belongs in an application.
	trees := []string{mod + "refcount/", mod + "hotplug/", mod + "userclient/server/", mod + "driver/usb/"}
	for _, goos := range []string{"linux", "darwin"} {
		for _, pkg := range []string{mod + "userclient", mod + "examples/scsiapp", mod + "driver/scsi/blockdev"} {
			cmd := exec.Command(goBin, "list", "-deps", pkg)
			cmd.Env = append(cmd.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
			out, err := cmd.Output()
			require.NoError(t, err, "go list -deps %s: %s", pkg, exitStderr(err))
			deps := strings.Fields(string(out))
			require.Contains(t, deps, pkg)
			for _, d := range deps {
				bad := forbidden[d]
				for _, tr := range trees {
					bad = bad || strings.HasPrefix(d, tr)
				}
				require.False(t, bad, "GOOS=%s: %s links %s", goos, pkg, d)
			}
		}
	}
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
