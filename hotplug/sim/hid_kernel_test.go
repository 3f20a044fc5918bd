package sim_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/sim"
)

// kbdCapture is the real plug and unplug of QEMU's usb-kbd, recorded by
// e2e's TestHIDKeyboard (see its .txt for the host's actions).
const kbdCapture = "../hidbus/testdata/qemu-usb-kbd.b64"

// withoutSeqnum drops a datagram's SEQNUM field.
func withoutSeqnum(t *testing.T, b []byte) []byte {
	t.Helper()
	var out [][]byte
	for _, f := range bytes.Split(b, []byte{0}) {
		if !bytes.HasPrefix(f, []byte("SEQNUM=")) {
			out = append(out, f)
		}
	}
	return bytes.Join(out, []byte{0})
}

// shape is an event as the comparison of the sequences sees it: input
// devices by kind (the kernel numbers them after the machine's own), the
// rest by name.
func shape(ev hotplug.Event) string {
	name := ev.Name()
	if ev.Subsystem == "input" {
		name = strings.TrimRight(name, "0123456789")
	}
	return fmt.Sprintf("%s %s %s", ev.Action, ev.Subsystem, name)
}

// TestSimKeyboardMatchesKernel replays the capture's usb-kbd with the
// simulator and compares where it matters to drvkit:
//
//   - every usb, hid and hidraw datagram (what the USB and HID adapters
//     read) byte for byte, SEQNUM aside (the guest's input LEDs and wakeup
//     source send events the simulator does not model, so the numbers
//     drift);
//   - the order of those events and of the input device (inputN, without
//     its capability bitmaps in the simulator) among them.
//
// Not modelled, and so left out: the input LED class devices and their
// trigger changes, the wakeup source, evdev's eventN (evdev is not loaded
// in the guest; the simulator's machine has it).
func TestSimKeyboardMatchesKernel(t *testing.T) {
	raw, err := os.ReadFile(kbdCapture)
	require.NoError(t, err)
	txt, err := os.ReadFile(strings.TrimSuffix(kbdCapture, ".b64") + ".txt")
	require.NoError(t, err)
	var desc string
	for _, l := range strings.Split(string(txt), "\n") {
		if d, ok := strings.CutPrefix(l, "# report_descriptor (sysfs): "); ok {
			desc = d
		}
	}
	require.NotEmpty(t, desc, "the capture names the keyboard's report descriptor")

	var real []hotplug.Event
	var realRaw [][]byte
	for _, l := range strings.Fields(string(raw)) {
		b, err := base64.StdEncoding.DecodeString(l)
		require.NoError(t, err)
		ev, err := hotplug.Parse(b)
		require.NoError(t, err)
		real = append(real, ev)
		realRaw = append(realRaw, b)
	}
	require.NotEmpty(t, real)
	usbDev := real[0].DevPath
	require.Equal(t, "usb_device", real[0].DevType)
	port := path.Base(usbDev)

	sc, err := sim.ParseScenarioString("qemu-usb-kbd.scn", fmt.Sprintf(`
seqnum %d
plug usb %s vid=0627 pid=0001 bcd=0000 manufacturer=QEMU product="QEMU USB Keyboard" serial=%s ifaces=03/01/01 hid=hex:%s
unplug %s
`, real[0].Seqnum, port, real[3].Get("HID_UNIQ"), desc, port))
	require.NoError(t, err)
	s, err := sim.New(sc, sim.Config{SkipWaits: true})
	require.NoError(t, err)
	defer s.Close()
	simEvs := drain(t, s)

	matters := func(ev hotplug.Event) bool {
		switch ev.Subsystem {
		case "usb", "hid", "hidraw":
			return true
		case "input":
			return strings.HasPrefix(ev.Name(), "input") // not eventN
		}
		return false
	}
	var wantShape, gotShape []string
	var want, got [][]byte
	for i, ev := range real {
		if matters(ev) {
			wantShape = append(wantShape, shape(ev))
			if ev.Subsystem != "input" {
				want = append(want, withoutSeqnum(t, realRaw[i]))
			}
		}
	}
	for _, ev := range simEvs {
		if matters(ev) {
			gotShape = append(gotShape, shape(ev))
			if ev.Subsystem != "input" {
				b, err := ev.MarshalBinary()
				require.NoError(t, err)
				got = append(got, withoutSeqnum(t, b))
			}
		}
	}
	require.Equal(t, wantShape, gotShape)
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, strings.ReplaceAll(string(want[i]), "\x00", "\n"), strings.ReplaceAll(string(got[i]), "\x00", "\n"), "datagram %d", i)
	}
	require.Equal(t, real[0].Seqnum, simEvs[0].Seqnum)
}
