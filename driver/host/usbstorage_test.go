package host_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/host"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
)

// usbstorageManifest runs the test binary as usbstorage (driverproc.Main
// of usbstorage.Entry, the very driver the daemon has built in) for
// bulk-only mass-storage interfaces, with its client methods.
func usbstorageManifest(t *testing.T, dir string) *bundle.Manifest {
	text := `name = "usbstorage-oop"
version = "1.0"
[run]
executable = "` + testExe + `"
args = ["` + driverArg + `", "usbstorage"]
user = "65534"
[[personality]]
provider_class = "USBInterface"
class = "USBMassStorage"
match.class = 8
match.subclass = 6
match.protocol = 0x50
[[method]]
name = "inquiry"
[[method]]
name = "capacity"
[[method]]
name = "read"
[[method]]
name = "write"
`
	p := filepath.Join(dir, "usbstorage.toml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	m, err := bundle.Load(p, bundle.Options{})
	require.NoError(t, err)
	return m
}

// TestUSBStorageOutOfProcess: usbstorage, in process and as a bundle's
// process, on a simulated stick published as the hotplug bridge does — the
// bus and device numbers on the USB device nub, the interface's number and
// class on the interface nub under it. Out of process the driver finds the
// device numbers on its nub's provider because the start message carries
// the provider chain (protocol 1.2); its device is the interface the daemon
// claimed (the kernel's usb-storage detached through the journal). It
// reads and writes the disk; unload gives usb-storage back (and the
// process reports no leak: the mirrored providers go with its registry); a second stick
// is unplugged under the driver, which ends cleanly. Nothing is left.
func TestUSBStorageOutOfProcess(t *testing.T) {
	for _, tc := range []struct {
		name string
		oop  bool
	}{{"inprocess", false}, {"outofprocess", true}} {
		t.Run(tc.name, func(t *testing.T) {
			sim := usbsim.New()
			j, err := usb.OpenJournal(filepath.Join(t.TempDir(), "usb-detached.json"))
			require.NoError(t, err)
			back := j.Wrap(sim)
			e := newEnv(t, func(cfg *host.Config) {
				cfg.TraceDrivers = true // the driver process reports what it left, mirrored providers included
				drivertable.Provide(cfg.Resources, usbstorage.BackendKey, func() (usb.Backend, error) { return back, nil })
			})
			name := usbstorage.Name
			if tc.oop {
				m := usbstorageManifest(t, e.dir)
				name = m.Name
				e.load(e.h.Entry(m))
			} else {
				require.NoError(t, e.r.RegisterPersonality(usbstorage.Personality(back)))
			}

			plug := func(addr int, port string) (*usbsim.Device, *driver.Service, *driver.Service) {
				disk := scsisim.NewDisk(64, 512, scsisim.WithInquiry("DRVKIT", "SIM STICK", "1.0", scsi.TypeDisk))
				_, fake := sim.PlugMassStorage(usbsim.DeviceSpec{Bus: 1, Address: addr, Vendor: 0x46f4, Product: 0x0001}, disk)
				dev := e.r.NewNub("USBDevice", port, driver.NewProperties(map[string]any{
					"busnum": 1, "devnum": addr, "idVendor": 0x46f4, "idProduct": 0x0001}))
				require.NoError(t, e.r.Publish(nil, dev))
				nub := e.r.NewNub(usbstorage.NubClass, port+":1.0", driver.NewProperties(map[string]any{
					usbstorage.PropInterfaceNumber: 0, usbstorage.PropInterfaceClass: 8,
					usbstorage.PropInterfaceSubClass: 6, usbstorage.PropInterfaceProtocol: 0x50,
					"idVendor": 0x46f4, "idProduct": 0x0001}))
				require.NoError(t, e.r.Publish(dev, nub))
				var inst *driver.Service
				require.Eventually(t, func() bool {
					for _, c := range nub.Clients() {
						if st := c.State(); c.Class() == usbstorage.Class && st.Active && st.Started {
							inst = c
							return true
						}
					}
					return false
				}, 20*time.Second, 5*time.Millisecond, "no started usbstorage on %s: %s", nub, e.logs.String())
				return fake, dev, inst
			}

			fake, dev, inst := plug(4, "1-1")
			require.Equal(t, "usbfs", fake.KernelDriver(0), "claimed, usb-storage detached")
			require.Len(t, j.Entries(), 1, "the detach is on record")
			if tc.oop {
				require.NotEqual(t, os.Getpid(), e.pid(name))
			}
			out, err := inst.Call(e.ctx, blockdev.MethodInquiry, nil)
			require.NoError(t, err)
			q, err := blockdev.DecodeInquiry(out)
			require.NoError(t, err)
			require.Equal(t, "SIM STICK", q.Product)
			out, err = inst.Call(e.ctx, blockdev.MethodCapacity, nil)
			require.NoError(t, err)
			c, err := blockdev.DecodeCapacity(out)
			require.NoError(t, err)
			require.Equal(t, blockdev.Capacity{Blocks: 64, BlockSize: 512}, c)
			block := bytes.Repeat([]byte("drvkit"), 512/6+1)[:512]
			_, err = inst.Call(e.ctx, blockdev.MethodWrite, blockdev.EncodeWrite(3, block))
			require.NoError(t, err)
			out, err = inst.Call(e.ctx, blockdev.MethodRead, blockdev.EncodeRead(3, 1))
			require.NoError(t, err)
			require.Equal(t, block, out)

			// Unload: the instance ends, usb-storage is given back.
			require.NoError(t, e.r.Unload(e.ctx, name))
			require.Eventually(t, func() bool { return fake.KernelDriver(0) == "usb-storage" }, 5*time.Second, 5*time.Millisecond)
			require.Empty(t, j.Entries())
			if tc.oop {
				require.Empty(t, e.status(name).PIDs)
				require.Zero(t, e.status(name).TotalCrashes)
			}
			dev.TerminateWith(driver.CauseUnplug)
			fake.Unplug()

			// Loaded again, on a stick unplugged under the running driver.
			if tc.oop {
				e.load(e.h.Entry(usbstorageManifest(t, e.dir)))
			} else {
				require.NoError(t, e.r.RegisterPersonality(usbstorage.Personality(back)))
			}
			fake, dev, inst = plug(5, "1-2")
			gone := inst.Done()
			fake.Unplug()
			_, err = inst.Call(e.ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 1))
			require.ErrorIs(t, err, driver.ErrNoDevice)
			dev.TerminateWith(driver.CauseUnplug)
			select {
			case <-gone:
			case <-e.ctx.Done():
				t.Fatalf("instance not freed: %v", inst.Blockers())
			}
			require.NoError(t, e.r.Unload(e.ctx, name))
			if tc.oop {
				require.Zero(t, e.status(name).TotalCrashes)
				require.Empty(t, e.h.DriverLeaks(name), "the driver process left nothing alive")
			}
			e.finish()
			require.NoError(t, sim.Close())
			require.Zero(t, sim.OpenHandles())
		})
	}
}
