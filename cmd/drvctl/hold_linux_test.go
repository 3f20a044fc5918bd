package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug/usbhold"
)

// The hold in a daemon on real netlink, its sysfs a fake tree: a killed
// predecessor's gate is lifted before serving; the gates follow the
// personalities — set when a bundle with a USB personality loads, lifted
// when it unloads — and go at shutdown, leaving no state.
func TestServeUSBHold(t *testing.T) {
	root := t.TempDir()
	devs := filepath.Join(root, "bus", "usb", "devices")
	for hub, v := range map[string]string{"usb1": "0", "usb2": "1"} {
		require.NoError(t, os.MkdirAll(filepath.Join(devs, hub), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(devs, hub, "interface_authorized_default"), []byte(v+"\n"), 0o644))
	}
	gate := func(hub string) string {
		b, err := os.ReadFile(filepath.Join(devs, hub, "interface_authorized_default"))
		require.NoError(t, err)
		return strings.TrimSpace(string(b))
	}
	state := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.Mkdir(state, 0o700))
	statePath := filepath.Join(state, holdStateName)
	require.NoError(t, os.WriteFile(statePath, []byte(`{"version":1,"gated":["usb1"]}`), 0o600))
	noState := func() {
		t.Helper()
		_, err := os.Stat(statePath)
		require.ErrorIs(t, err, os.ErrNotExist)
	}

	dir := t.TempDir()
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, drivers: "sg", logFormat: "text", logLevel: "info",
		trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second,
		stateDir: state, usbHold: true, sysfs: root})
	require.Contains(t, d.log.String(), "usb hold: undid what a previous daemon left")
	require.Equal(t, "1", gate("usb1"), "the dead daemon's gate is lifted before serving")
	require.Equal(t, "1", gate("usb2"))
	noState()

	cli := func(args ...string) {
		t.Helper()
		e, _, errb := testEnv(nil, 0)
		require.Equal(t, 0, run(append(args, "--socket", sock), e), errb.String())
	}
	manifest := writeBundle(t, filepath.Join(dir, "b"), "stickdrv", stickPersonality, true)
	cli("load", manifest)
	require.Equal(t, "0", gate("usb1"), "a USB personality is loaded: gated")
	require.Equal(t, "0", gate("usb2"))
	st, err := usbhold.ReadState(statePath)
	require.NoError(t, err)
	require.Equal(t, []string{"usb1", "usb2"}, st.Gated)

	cli("unload", "stickdrv")
	require.Equal(t, "1", gate("usb1"), "no USB personality left: lifted")
	require.Equal(t, "1", gate("usb2"))
	noState()

	cli("load", manifest)
	require.Equal(t, "0", gate("usb1"))
	require.NoError(t, d.stop())
	require.Equal(t, "1", gate("usb1"), "lifted at shutdown")
	require.Equal(t, "1", gate("usb2"))
	noState()
	require.Contains(t, d.log.String(), "shutdown complete: every service freed, nothing leaked")
}
