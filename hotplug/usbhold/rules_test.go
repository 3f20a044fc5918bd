package usbhold

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// A bundle with a masked product id, an interface number and a personality
// of another class, as an operator writes one.
const ftdiManifest = `name    = "ftdi-serial"
version = "1.0.0"

[run]
executable = "ftdi-serial"
user       = "1000"
group      = "1000"

[[personality]]
provider_class = "USBInterface"
score          = 100
[personality.match]
vid       = 0x0403
pid       = { value = 0x6000, mask = 0xff00 }
interface = 0

[[personality]]
provider_class = "HIDDevice"
match.usage_page = 0x01
`

// loaded is what a daemon runs with: usbstorage's default personality
// and a custom one, sg, and a bundle — all through the driver table.
func loaded(t *testing.T) []driver.Personality {
	t.Helper()
	res := drivertable.NewResources()
	b := usbtest.New()
	t.Cleanup(func() { b.Close() })
	drivertable.Provide(res, usbstorage.BackendKey, func() (usb.Backend, error) { return b, nil })
	drivertable.Provide(res, sg.OpenerKey, func() (sg.Opener, error) { return sg.OpenSG, nil })
	var ps []driver.Personality
	us, err := usbstorage.Entry.Defaults(res)
	require.NoError(t, err)
	ps = append(ps, us...)
	vid, err := usbstorage.Entry.ParseMatch("vid", "1d50")
	require.NoError(t, err)
	pid, err := usbstorage.Entry.ParseMatch("pid", "6018")
	require.NoError(t, err)
	gadget, err := usbstorage.Entry.Custom(res, "gadget", 100, []driver.Match{vid, pid})
	require.NoError(t, err)
	ps = append(ps, gadget)
	sgps, err := sg.Entry.Defaults(res)
	require.NoError(t, err)
	ps = append(ps, sgps...)

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ftdi-serial"), []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, bundle.ManifestName), []byte(ftdiManifest), 0o644))
	m, err := bundle.Load(dir, bundle.Options{})
	require.NoError(t, err)
	e := m.Entry(nil)
	bps, err := e.Defaults(res)
	require.NoError(t, err)
	ps = append(ps, bps...)
	ps = append(ps, driver.Personality{Name: "picky", ProviderClass: usbbus.ClassInterface,
		Match: []driver.Match{driver.MatchValue(usbbus.PropVendorID, 0x1234), driver.MatchFunc(func(driver.Properties) bool { return true })}})
	return ps
}

func TestRulesGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		ps   func(t *testing.T) []driver.Personality
	}{
		{"loaded", loaded},
		{"none", func(t *testing.T) []driver.Personality {
			ps := loaded(t)
			return ps[2:3] // sg alone holds nothing
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			require.NoError(t, WriteRules(&b, Rules(tc.ps(t))))
			golden := filepath.Join("testdata", "rules-"+tc.name+".golden")
			if *update {
				require.NoError(t, os.WriteFile(golden, b.Bytes(), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			require.Equal(t, string(want), b.String())
		})
	}
}

// ifaceEvent is the add uevent of an interface of a device vid:pid.
func ifaceEvent(t *testing.T, name string, vid, pid uint16, class [3]uint8) *hotplug.Event {
	t.Helper()
	k := newFakeKernel("usb1", "usb2")
	b, _, _ := interfaceBus(name)
	ev := k.plug(t, name, b, 2, vid, pid, class, "")
	return &ev
}

func TestClaimant(t *testing.T) {
	ps := loaded(t)
	for _, tc := range []struct {
		name  string
		iface string
		vid   uint16
		pid   uint16
		class [3]uint8
		want  string
	}{
		{"bulk-only stick", "2-1:1.0", 0x46f4, 0x0001, stick, "usbstorage"},
		{"gadget: the higher score", "1-1:1.0", 0x1d50, 0x6018, stick, "gadget"},
		{"gadget vendor-specific interface", "1-1:1.0", 0x1d50, 0x6018, [3]uint8{0xff, 0, 0}, "gadget"},
		{"UAS protocol is not bulk-only", "2-1:1.0", 0x0781, 0x5581, [3]uint8{0x08, 0x06, 0x62}, ""},
		{"keyboard", "1-2:1.0", 0x0627, 0x0001, keyboard, ""},
		{"ftdi under the mask", "1-3:1.0", 0x0403, 0x6001, [3]uint8{0xff, 0xff, 0xff}, "ftdi-serial"},
		{"ftdi under the mask, other interface", "1-3:1.1", 0x0403, 0x6010, [3]uint8{0xff, 0xff, 0xff}, ""},
		{"ftdi outside the mask", "1-3:1.0", 0x0403, 0x7001, [3]uint8{0xff, 0xff, 0xff}, ""},
		{"match function", "1-4:1.0", 0x1234, 0x0001, [3]uint8{0xff, 0, 0}, "picky"},
		{"hub", "1-0:1.0", 0x1d6b, 0x0002, [3]uint8{0x09, 0, 0}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			props, err := InterfaceProperties(ifaceEvent(t, tc.iface, tc.vid, tc.pid, tc.class))
			require.NoError(t, err)
			require.Equal(t, tc.want, Claimant(ps, props))
		})
	}
}

func TestInterfacePropertiesRefusesDevice(t *testing.T) {
	ev := mustEvent(t, "add", "/devices/pci0000:00/0000:00:04.0/usb2/2-1", "DEVTYPE=usb_device", "PRODUCT=46f4/1/0", "TYPE=0/0/0", "BUSNUM=002", "DEVNUM=003")
	_, err := InterfaceProperties(&ev)
	require.Error(t, err)
}
