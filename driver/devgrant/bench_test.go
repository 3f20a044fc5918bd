//go:build linux

package devgrant_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/usb"
)

// compare times the socket path as the benchmark (so allocs/op are its)
// and the in-process path for as many iterations, then reports the
// in-process time and the ratio.
func compare(b *testing.B, socket, inproc func()) {
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		socket()
	}
	b.StopTimer()
	sock := b.Elapsed()
	start := time.Now()
	for range b.N {
		inproc()
	}
	in := time.Since(start)
	b.ReportMetric(float64(in.Nanoseconds())/float64(b.N), "inproc-ns/op")
	b.ReportMetric(float64(sock)/float64(max(in, 1)), "x-inproc")
}

// BenchmarkHIDReport: one input report from the device to the driver,
// through the granted socket vs hidsim in the same process.
func BenchmarkHIDReport(b *testing.B) {
	rig := newHIDRig(b)
	dev, err := rig.back.Open("/dev/hidraw0")
	require.NoError(b, err)
	defer dev.Close()
	local := rig.sim.Plug("/dev/hidraw1", hidsim.Spec{})
	ldev, err := rig.sim.Open("/dev/hidraw1")
	require.NoError(b, err)
	defer ldev.Close()
	report := []byte{0, 0, 0x04, 0, 0, 0, 0, 0}
	buf := make([]byte, 64)
	ctx := context.Background()
	read := func(fake *hidsim.Device, d hid.Device) func() {
		return func() {
			fake.Input(report)
			if _, err := d.ReadInput(ctx, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	compare(b, read(rig.fake, dev), read(local, ldev))
}

// BenchmarkSGCommand: one INQUIRY, through the granted socket vs the
// simulated disk's transport in the same process.
func BenchmarkSGCommand(b *testing.B) {
	rig := newSGRig(b)
	tr, err := rig.open("/dev/sg1")
	require.NoError(b, err)
	defer tr.Close()
	local := scsisim.NewTransport(scsisim.NewDisk(2048, 512))
	ctx := context.Background()
	cmd := scsi.Command{CDB: []byte{0x12, 0, 0, 0, 96, 0}, Dir: scsi.DirIn, Data: make([]byte, 96)}
	exec := func(t scsi.Transport) func() {
		return func() {
			if _, err := t.Execute(ctx, &cmd); err != nil {
				b.Fatal(err)
			}
		}
	}
	compare(b, exec(tr), exec(local))
}

// BenchmarkUSBControl: one control transfer (Get Max LUN), through the
// granted socket vs usbsim in the same process.
func BenchmarkUSBControl(b *testing.B) {
	rig := newUSBRig(b)
	ctx := context.Background()
	dev, err := rig.back.Open(ctx, usb.Selector{Bus: 1, Address: 4})
	require.NoError(b, err)
	defer dev.Close()
	local, err := rig.sim.Open(ctx, usb.Selector{Bus: 1, Address: 4})
	require.NoError(b, err)
	defer local.Close()
	lun := make([]byte, 1)
	ctl := func(d interface {
		Control(context.Context, uint8, uint8, uint16, uint16, []byte) (int, error)
	}) func() {
		return func() {
			if _, err := d.Control(ctx, 0xa1, 0xfe, 0, 0, lun); err != nil {
				b.Fatal(err)
			}
		}
	}
	compare(b, ctl(dev), ctl(local))
}
