package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// TestServeHIDKeyboardOnSimBus: on `serve --sim`, a keyboard plugged at
// run time is driven by hidkbd through the simulated hidraw node, what
// `drvctl sim 'hid type …'` types reaches it, and an unplug ends a read in
// progress with ErrNoDevice; the daemon shuts down with nothing leaked.
func TestServeHIDKeyboardOnSimBus(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, nil, 0o644))
	o := serveOptions{socket: filepath.Join(dir, "d.sock"), sim: scn,
		logFormat: "text", logLevel: "error", trace: "all", socketGroup: -1,
		termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second}
	d := startServe(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	require.NoError(t, d.inject(ctx, "plug usb 1-1 vid=0627 pid=0001 product=\"QEMU USB Keyboard\" ifaces=03/01/01 hid=keyboard\nhid type 1-1 text=drvkit"))
	kbd := findClass(t, d.reg, hidkbd.Class)
	require.Eventually(t, func() bool {
		out, err := kbd.Call(ctx, hidkbd.MethodKeys, nil)
		require.NoError(t, err)
		var k hidkbd.KeysReply
		require.NoError(t, json.Unmarshal(out, &k))
		return k.Text == "drvkit"
	}, 10*time.Second, 5*time.Millisecond)

	readErr := make(chan error, 1)
	busy := kbd.State().Busy
	go func() {
		_, err := kbd.Call(ctx, hidkbd.MethodRead, []byte(`{"after":1000000}`))
		readErr <- err
	}()
	// Unplug under the read, not before it began (a call that begins after
	// the termination is refused as not active).
	require.Eventually(t, func() bool { return kbd.State().Busy > busy }, 10*time.Second, time.Millisecond)
	require.NoError(t, d.inject(ctx, "unplug 1-1"))
	require.ErrorIs(t, <-readErr, driver.ErrNoDevice)
	require.NoError(t, d.stop())
}
