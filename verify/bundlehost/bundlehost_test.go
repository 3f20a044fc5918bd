package bundlehost_test

import (
	"context"
	"flag"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/verify"
	"github.com/drvkit/drvkit/verify/bundlehost"
)

var flagFull = flag.Bool("bundles.full", false, "TestSampleBundles: the default budget (every step × fault pair, then random schedules for 55 s per bundle), as make stress runs it")

func onLinux(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("out-of-process drivers need Linux")
	}
}

// TestSampleBundles verifies the sample bundles out of process, each as
// it ships — pycounter (Python), gocounter (the counter sample through the
// Go SDK), hidkbd (the built-in HID keyboard driver through the Go SDK),
// usbstorage (the built-in mass-storage driver through the Go SDK: its
// device numbers come with the start message's providers) —
// on the device model their manifests select. make test runs an
// application's SIGKILL, an administrator's terminate and the driver
// process's own SIGKILL at start, call and stop (the kills with the
// application process calling on a direct call channel), and a random
// schedule;
// -bundles.full (make stress) the default budget, every pair.
func TestSampleBundles(t *testing.T) {
	onLinux(t)
	for _, c := range []struct {
		name, dir, pkg, model string
		files                 []string
	}{
		{"pycounter", "examples/bundles/pycounter", "", "hid-keyboard 1209:0001", []string{"driver.py"}},
		{"gocounter", "examples/bundles/gocounter", "examples/bundles/gocounter", "hid-keyboard 1209:0001", nil},
		{"hidkbd", "examples/bundles/hidkbd", "examples/bundles/hidkbd", "hid-keyboard 0627:0001", nil},
		{"usbstorage", "examples/bundles/usbstorage", "examples/bundles/usbstorage", "usb 46f4:0001 (08/06/50)", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "pycounter" {
				needPython(t)
			}
			m := sampleBundle(t, c.dir, c.pkg, "manifest.toml", c.files...)
			base := verify.Options{Kinds: []string{"app-kill", "terminate", "driver-kill"},
				Steps: []verify.Step{verify.StepStart, verify.StepCall, verify.StepStop}, Random: 1, Seed: 7, Settle: 2 * time.Second}
			if *flagFull {
				base = verify.Options{Budget: 55 * time.Second}
			}
			opts, err := bundlehost.Options(m, base)
			require.NoError(t, err)
			rep, err := verify.Verify(context.Background(), m.Entry(nil), opts)
			require.NoError(t, err)
			require.True(t, rep.Passed(), text(rep))
			require.Equal(t, c.model, rep.Device)
			for _, p := range rep.Pairs {
				require.Contains(t, []string{"covered", "n/a", "unreached"}, p.Status, "%s@%s", p.Kind, p.Step)
				if p.Step == verify.StepStart || p.Step == verify.StepCall || p.Step == verify.StepStop {
					require.Equal(t, "covered", p.Status, "%s@%s: %s", p.Kind, p.Step, p.Why)
				}
			}
			require.GreaterOrEqual(t, rep.DriverKills, 2, "driver-kill at start and call killed a live driver process:\n%s", text(rep))
			require.Contains(t, text(rep), "driver processes SIGKILLed: ")
			// Every sample serves direct call channels: the kills (of the
			// application, of the driver) ran with the application's
			// calls on one, where the instance was up to open it.
			require.GreaterOrEqual(t, rep.DirectRuns, 3, "runs on a direct channel:\n%s", text(rep))
			require.Contains(t, text(rep), "runs with an application on a direct call channel: ")
		})
	}
}

// TestDriverKillEveryStep: the driver process is SIGKILLed at every
// lifecycle step; where its instance was running, the trace terminates it
// with cause crashed (and every application heard that cause: the
// verifier's notification check), and nothing is left: no process, no
// zombie, no object, goroutine or descriptor.
func TestDriverKillEveryStep(t *testing.T) {
	onLinux(t)
	m := sampleBundle(t, "examples/bundles/gocounter", "examples/bundles/gocounter", "manifest.toml")
	crashed := 0
	base := verify.Options{Kinds: []string{"driver-kill"}, Random: -1, Settle: 2 * time.Second,
		Check: func(r *verify.Trial) []verify.Problem {
			for _, e := range r.Events() {
				if e.Step == driver.StepTerminate && e.Class == "Counter" && e.Cause == driver.CauseCrashed {
					crashed++
					break
				}
			}
			return nil
		}}
	opts, err := bundlehost.Options(m, base)
	require.NoError(t, err)
	rep, err := verify.Verify(context.Background(), m.Entry(nil), opts)
	require.NoError(t, err)
	require.True(t, rep.Passed(), text(rep))
	kills := map[verify.Step]bool{}
	for _, p := range rep.Pairs {
		require.Equal(t, "driver-kill", p.Kind)
		if p.Step == verify.StepProbe {
			require.Equal(t, "unreached", p.Status, "a proxy has no Probe")
			continue
		}
		require.Equal(t, "covered", p.Status, "%s: %s", p.Step, p.Why)
		kills[p.Step] = p.Why == ""
	}
	for _, st := range []verify.Step{verify.StepPublish, verify.StepStart, verify.StepOpen, verify.StepCall, verify.StepWillTerminate} {
		require.True(t, kills[st], "driver-kill at %s killed a live process:\n%s", st, text(rep))
	}
	require.GreaterOrEqual(t, rep.DriverKills, 5)
	require.GreaterOrEqual(t, crashed, 4, "a kill of a running driver terminates its instance with cause crashed")
}

// TestOptions: the device model and the call come from the manifest.
func TestOptions(t *testing.T) {
	text := func(pers, methods string) *bundle.Manifest {
		m, err := bundle.Parse("/x/manifest.toml", []byte("name = \"x\"\nversion = \"1\"\n[run]\nexecutable = \"/bin/true\"\nuser = \"65534\"\ngroup = \"65534\"\n"+pers+methods), bundle.Options{})
		require.NoError(t, err)
		return m
	}
	for _, c := range []struct {
		pers, methods, model, call, err string
	}{
		{"[[personality]]\nprovider_class = \"HIDDevice\"\nmatch.vid = 0x1209\nmatch.pid = 0x0001\n", "[[method]]\nname = \"echo\"\nmax_input = 10\n[[method]]\nname = \"count\"\n",
			"hid-keyboard 1209:0001", "count", ""},
		{"[[personality]]\nprovider_class = \"HIDDevice\"\nmatch.usage_page = 0x01\nmatch.usage = 0x06\n", "[[method]]\nname = \"keys\"\nmax_output = 10\n[[method]]\nname = \"count\"\n",
			"hid-keyboard 0627:0001", "keys", ""},
		{"[[personality]]\nprovider_class = \"SCSIDevice\"\nmatch.type = 0\n", "", `scsi-disk "DRVKIT" "VERIFY DISK" type 0`, "", ""},
		{"[[personality]]\nprovider_class = \"USBInterface\"\nmatch.class = 8\n", "", "usb 46f4:0001 (08/06/50)", "", ""},
		{"[[personality]]\nprovider_class = \"HIDDevice\"\nmatch.usage_page = 0x0d\n", "", "", "",
			"no device model fits the bundle x (x#0: usage page 0xd (the HID model is a keyboard, page 1)): give one with --device or verify.Options.Device"},
		{"[[personality]]\nprovider_class = \"USBInterface\"\nmatch.class = 3\n", "", "", "", "no device model fits the bundle x (x#0: interface class 0x3 (the USB model is mass storage, class 8))"},
	} {
		m := text(c.pers, c.methods)
		opts, err := bundlehost.Options(m, verify.Options{})
		if c.err != "" {
			require.ErrorIs(t, err, bundlehost.ErrNoModel)
			require.ErrorContains(t, err, c.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, c.model, opts.Device.String())
		require.Equal(t, c.call, opts.Call.Method)
		require.IsType(t, &bundlehost.Host{}, opts.Host)
	}
}

// TestNeedsHost: a bundle's entry is not verified in process.
func TestNeedsHost(t *testing.T) {
	m, err := bundle.Parse("/x/manifest.toml", []byte("name = \"x\"\nversion = \"1\"\n[run]\nexecutable = \"/bin/true\"\nuser = \"65534\"\ngroup = \"65534\"\n[[personality]]\nprovider_class = \"HIDDevice\"\nmatch.vid = 1\n"), bundle.Options{})
	require.NoError(t, err)
	_, err = verify.Verify(context.Background(), m.Entry(nil), verify.Options{Device: &verify.HIDKeyboard{}})
	require.ErrorIs(t, err, verify.ErrNeedsHost)
}

func text(rep *verify.Report) string {
	var b strings.Builder
	_ = rep.WriteText(&b)
	return b.String()
}
