package verify_test

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/verify"
	"github.com/drvkit/drvkit/verify/verifytest"
)

var flagFull = flag.Bool("samples.full", false, "TestSampleDrivers: the default budget (every step × fault pair, then 60 s of random schedules per driver), as make stress runs it")

// TestSampleDrivers verifies drvkit's sample drivers — usbstorage (USB
// stick), sg (SCSI disk), both serving the block methods of blockdrv, and
// hidkbd (HID keyboard) — each on the device model its needs select. make
// test runs every fault kind at the steps every driver reaches (start,
// call, stop) and a few random schedules; -samples.full (make stress)
// runs the default budget, every pair.
func TestSampleDrivers(t *testing.T) {
	for _, e := range []drivertable.Entry{usbstorage.Entry, sg.Entry, hidkbd.Entry} {
		t.Run(e.Name, func(t *testing.T) {
			opts := verify.Options{Steps: []verify.Step{verify.StepStart, verify.StepCall, verify.StepStop}, Random: 3, Seed: 7}
			if *flagFull {
				opts = verify.Options{Budget: 60 * time.Second}
			}
			rep := verifytest.Run(t, e, opts)
			require.True(t, rep.Passed())
			for _, p := range rep.Pairs {
				require.Contains(t, []string{"covered", "n/a", "unreached"}, p.Status, "%s@%s", p.Kind, p.Step)
				if p.Step == verify.StepStart || p.Step == verify.StepCall || p.Step == verify.StepStop {
					require.NotEqual(t, "unreached", p.Status, "every driver reaches %s (%s)", p.Step, p.Kind)
				}
			}
		})
	}
}
