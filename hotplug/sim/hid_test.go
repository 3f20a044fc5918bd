package sim_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
)

// TestSimKeyboard checks the simulated usbhid: the event sequence of a
// keyboard's plug and unplug, the sysfs mirror (bus/hid/devices,
// class/hidraw, the binary report descriptor), and input reports handed
// to Config.Reports in step order between the events.
func TestSimKeyboard(t *testing.T) {
	sc, err := sim.ParseScenarioString("kbd.scn", `
plug usb 2-1 vid=046d pid=c31c manufacturer=Logitech product="USB Keyboard" ifaces=03/01/01 hid=keyboard
hid type 2-1 text=A
unplug 2-1
`)
	require.NoError(t, err)
	dir := t.TempDir()
	var lines []string
	var reports []sim.Report
	s, err := sim.New(sc, sim.Config{SysfsDir: dir, Reports: func(r sim.Report) {
		reports = append(reports, r)
		lines = append(lines, fmt.Sprintf("report %s %x", r.Node, r.Data))
	}})
	require.NoError(t, err)
	defer s.Close()
	const hidDev = "/devices/pci0000:00/0000:00:02.0/usb2/2-1/2-1:1.0/0003:046D:C31C.0001"
	for {
		ev, err := s.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		lines = append(lines, fmt.Sprintf("%s %s %s %s", ev.Action, ev.Subsystem, ev.Name(), ev.Driver))
		if ev.Subsystem == "hid" && ev.Action == hotplug.ActionBind {
			require.Equal(t, "0003:0000046D:0000C31C", ev.Get("HID_ID"))
			require.Equal(t, "Logitech USB Keyboard", ev.Get("HID_NAME"))
			require.Equal(t, "usb-0000:00:02.0-1/input0", ev.Get("HID_PHYS"))
			require.Equal(t, "hid:b0003g0001v0000046Dp0000C31C", ev.Get("MODALIAS"))
			require.Equal(t, hidDev, ev.DevPath)
			// The mirror is written before the events are handed out.
			desc, err := os.ReadFile(filepath.Join(dir, ev.DevPath, "report_descriptor"))
			require.NoError(t, err)
			require.Equal(t, hid.BootKeyboard, desc)
			walked, err := hotplug.Walk(dir, buses.Classes(), hotplug.OriginColdplug)
			require.NoError(t, err)
			var names []string
			for _, w := range walked {
				names = append(names, w.Subsystem+" "+w.Name())
			}
			require.Equal(t, []string{"usb 2-1", "usb 2-1:1.0", "hid 0003:046D:C31C.0001", "hidraw hidraw0"}, names)
		}
	}
	require.Equal(t, []string{
		"add usb 2-1 ", "change usb 2-1 usb", "add usb 2-1:1.0 ", "add hid 0003:046D:C31C.0001 ", "add input input0 ", "add input event0 ",
		"add hidraw hidraw0 ", "bind hid 0003:046D:C31C.0001 hid-generic", "bind usb 2-1:1.0 usbhid", "bind usb 2-1 usb",
		"report /dev/hidraw0 0200040000000000", "report /dev/hidraw0 0000000000000000",
		"remove input event0 ", "remove input input0 ", "remove hidraw hidraw0 ", "unbind hid 0003:046D:C31C.0001 ",
		"remove hid 0003:046D:C31C.0001 ", "unbind usb 2-1:1.0 ", "remove usb 2-1:1.0 ", "unbind usb 2-1 ", "remove usb 2-1 ",
	}, lines)
	require.Equal(t, hidDev, reports[0].DevPath)
	require.True(t, bytes.Equal([]byte{2, 0, 4, 0, 0, 0, 0, 0}, reports[0].Data))
	walked, err := hotplug.Walk(dir, buses.Classes(), hotplug.OriginColdplug)
	require.NoError(t, err)
	require.Empty(t, walked)
}

func TestKeyCode(t *testing.T) {
	for _, tc := range []struct {
		c     rune
		code  byte
		shift bool
	}{{'a', 0x04, false}, {'Z', 0x1d, true}, {'1', 0x1e, false}, {'0', 0x27, false}, {'\n', 0x28, false}, {' ', 0x2c, false}, {'/', 0x38, false}} {
		code, shift, ok := sim.KeyCode(tc.c)
		require.True(t, ok, string(tc.c))
		require.Equal(t, tc.code, code, string(tc.c))
		require.Equal(t, tc.shift, shift, string(tc.c))
	}
	_, _, ok := sim.KeyCode('€')
	require.False(t, ok)
}
