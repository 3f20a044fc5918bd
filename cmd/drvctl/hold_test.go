package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// `drvctl unhold` after a daemon was killed with a gate set and a stick
// held: the gate is lifted, the driverless stick probed, the state gone;
// run again, there is nothing held.
func TestUnhold(t *testing.T) {
	root := t.TempDir()
	devs := filepath.Join(root, "bus", "usb", "devices")
	for p, v := range map[string]string{
		"usb2/interface_authorized_default": "0",
		"2-1/busnum":                        "2",
		"2-1/devnum":                        "3",
		"2-1/idVendor":                      "46f4",
		"2-1/idProduct":                     "0001",
		"2-1:1.0/authorized":                "1",
	} {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(devs, p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(devs, p), []byte(v+"\n"), 0o644))
	}
	probe := filepath.Join(root, "bus", "usb", "drivers_probe")
	require.NoError(t, os.WriteFile(probe, nil, 0o644))
	state := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(state, holdStateName), []byte(
		`{"version":1,"gated":["usb2"],"held":[{"interface":"2-1:1.0","bus":2,"address":3,"vendor":18164,"product":1,"personality":"usbstorage"}]}`), 0o600))

	e, out, errb := testEnv(nil, 0)
	require.Equal(t, exitOK, run([]string{"unhold", "--state-dir", state, "--sysfs", root}, e), errb.String())
	require.Equal(t, "gate lifted: usb2\ngiven back: 2-1:1.0\n", out.String())
	b, err := os.ReadFile(filepath.Join(devs, "usb2", "interface_authorized_default"))
	require.NoError(t, err)
	require.Equal(t, "1", strings.TrimSpace(string(b)))
	b, err = os.ReadFile(probe)
	require.NoError(t, err)
	require.Equal(t, "2-1:1.0", string(b))
	_, err = os.Stat(filepath.Join(state, holdStateName))
	require.ErrorIs(t, err, os.ErrNotExist)

	e, out, _ = testEnv(nil, 0)
	require.Equal(t, exitOK, run([]string{"unhold", "--state-dir", state, "--sysfs", root}, e))
	require.Equal(t, "nothing held\n", out.String())

	// A state file root did not write is refused and kept.
	require.NoError(t, os.WriteFile(filepath.Join(state, holdStateName), []byte(`{"version":1,"gated":["../x"]}`), 0o600))
	e, _, errb = testEnv(nil, 0)
	require.Equal(t, exitFail, run([]string{"unhold", "--state-dir", state, "--sysfs", root}, e))
	require.Contains(t, errb.String(), "not a root hub")
	_, err = os.Stat(filepath.Join(state, holdStateName))
	require.NoError(t, err)
}
