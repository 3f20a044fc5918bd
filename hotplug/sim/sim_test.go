package sim_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
)

func loadScenario(t *testing.T, path string) *sim.Scenario {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc, err := sim.ParseScenario(path, f)
	require.NoError(t, err)
	return sc
}

func render(ev hotplug.Event) string {
	var sb strings.Builder
	sb.WriteString(ev.Action.String() + "@" + ev.DevPath)
	for k, v := range ev.Env() {
		sb.WriteString("\n  " + k + "=" + v)
	}
	return sb.String()
}

// TestSimMatchesKernel replays the host's actions on the QEMU guest and
// compares every simulated datagram with what the real kernel sent.
func TestSimMatchesKernel(t *testing.T) {
	src, err := sim.New(loadScenario(t, "testdata/scenarios/qemu-capture.scn"), sim.Config{SkipWaits: true})
	require.NoError(t, err)
	defer src.Close()
	var got []hotplug.Event
	for _, ev := range drain(t, src) {
		require.Equal(t, hotplug.OriginSimulated, ev.Origin)
		if ev.Seqnum >= 730 {
			got = append(got, ev)
		}
	}
	var want [][]byte
	for _, b := range corpus(t) {
		ev, err := hotplug.Parse(b)
		require.NoError(t, err)
		if ev.Seqnum >= 730 && ev.Seqnum <= 808 {
			want = append(want, b)
		}
	}
	require.Len(t, want, 79)
	require.Len(t, got, len(want))
	for i := range want {
		w, _ := hotplug.Parse(want[i])
		require.Equal(t, render(w), render(got[i]), "event %d", i)
		b, err := got[i].MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, want[i], b)
	}
}

// TestSimSysfsMirror checks that the mirrored sysfs agrees with the events:
// a coldplug walk of it at the end finds exactly the devices added and not
// removed, and the attributes the uevents do not carry are readable.
func TestSimSysfsMirror(t *testing.T) {
	dir := t.TempDir()
	src, err := sim.New(loadScenario(t, "testdata/scenarios/qemu-capture.scn"), sim.Config{SysfsDir: dir, SkipWaits: true})
	require.NoError(t, err)
	defer src.Close()
	classes := append(buses.Classes(), hotplug.ClassBlock)
	tracked := map[string]bool{"usb": true, "scsi": true, "scsi_generic": true, "block": true}
	present := map[string]bool{}
	for _, ev := range drain(t, src) {
		if !tracked[ev.Subsystem] {
			continue
		}
		switch ev.Action {
		case hotplug.ActionAdd:
			present[ev.DevPath] = true
		case hotplug.ActionRemove:
			delete(present, ev.DevPath)
		}
	}
	evs, err := hotplug.Walk(dir, classes, hotplug.OriginColdplug)
	require.NoError(t, err)
	walked := map[string]bool{}
	for _, ev := range evs {
		walked[ev.DevPath] = true
		switch {
		case ev.DevType == "usb_device":
			d, err := ev.USBDevice()
			require.NoError(t, err)
			require.NoError(t, d.ReadAttrs(dir, ev.DevPath))
			require.Equal(t, "QEMU USB HARDDRIVE", d.ProductName)
			require.Contains(t, []string{"PROBE123", "SECOND"}, d.Serial)
			require.Equal(t, "usb", ev.Driver)
		case ev.DevType == "scsi_device":
			d, err := ev.SCSIDevice()
			require.NoError(t, err)
			require.NoError(t, d.ReadAttrs(dir, ev.DevPath))
			require.Equal(t, "QEMU HARDDISK", d.Model)
			require.Equal(t, "sd", ev.Driver)
		}
	}
	require.Equal(t, present, walked)
	// 2 sticks and their interfaces; hosts 1-2, targets 0-2, LUNs 0:0:0:0,
	// 0:0:0:1, 1:0:0:0, 2:0:0:0; their 4 sg nodes and 4 disks.
	require.Len(t, walked, 4+2+3+4+4+4)
}

func TestSimHubAndMultiInterface(t *testing.T) {
	sc, err := sim.ParseScenarioString("hub.scn", `
plug usb 1-1 vid=05e3 pid=0608 class=09/00/01 ifaces=09/00/00
plug usb 1-1.2 vid=1234 pid=5678 ifaces=03/01/01,08/06/50 serial=X
unplug 1-1
`)
	require.NoError(t, err)
	src, err := sim.New(sc, sim.Config{})
	require.NoError(t, err)
	defer src.Close()
	var lines []string
	for _, ev := range drain(t, src) {
		lines = append(lines, fmt.Sprintf("%d %s %s %s", ev.Seqnum, ev.Action, ev.Subsystem, ev.Name()))
	}
	require.Equal(t, []string{
		"1 add usb 1-1", "2 add usb 1-1:1.0", "3 bind usb 1-1:1.0", "4 bind usb 1-1",
		"5 add usb 1-1.2", "6 add usb 1-1.2:1.0", "7 add usb 1-1.2:1.1", "8 add workqueue scsi_tmf_1",
		"9 add scsi host1", "10 add scsi_host host1", "11 bind usb 1-1.2:1.1", "12 bind usb 1-1.2",
		"13 add scsi target1:0:0", "14 add scsi 1:0:0:0", "15 add scsi_device 1:0:0:0", "16 add scsi_disk 1:0:0:0",
		"17 add scsi_generic sg0", "18 add bsg 1:0:0:0", "19 change scsi 1:0:0:0", "20 add bdi 8:0", "21 add block sda",
		"22 bind scsi 1:0:0:0",
		// The hub goes: its child first (interfaces in reverse), then itself.
		"23 remove bsg 1:0:0:0", "24 remove scsi_generic sg0", "25 remove scsi_device 1:0:0:0", "26 remove scsi_disk 1:0:0:0",
		"27 remove bdi 8:0", "28 remove block sda", "29 unbind scsi 1:0:0:0", "30 remove scsi 1:0:0:0",
		"31 remove scsi target1:0:0", "32 remove scsi_host host1", "33 remove scsi host1", "34 remove workqueue scsi_tmf_1",
		"35 unbind usb 1-1.2:1.1", "36 remove usb 1-1.2:1.1", "37 remove usb 1-1.2:1.0", "38 unbind usb 1-1.2",
		"39 remove usb 1-1.2", "40 unbind usb 1-1:1.0", "41 remove usb 1-1:1.0", "42 unbind usb 1-1", "43 remove usb 1-1",
	}, lines)
}

func TestSimDeterministic(t *testing.T) {
	run := func() []string {
		src, err := sim.New(loadScenario(t, "testdata/scenarios/qemu-capture.scn"), sim.Config{SkipWaits: true})
		require.NoError(t, err)
		defer src.Close()
		var out []string
		for _, ev := range drain(t, src) {
			out = append(out, render(ev))
		}
		return out
	}
	require.Equal(t, run(), run())
}

func TestSimWaitAndClose(t *testing.T) {
	sc, err := sim.ParseScenarioString("w.scn", "wait 1h\nscsi add 0:0:0:0\n")
	require.NoError(t, err)
	src, err := sim.New(sc, sim.Config{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err = src.Next(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	done := make(chan error, 1)
	go func() { _, err := src.Next(context.Background()); done <- err }()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, src.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, hotplug.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a wait")
	}
}

func TestScenarioErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"explode 1-1", `t.scn:1: unknown command "explode"`},
		{"\n\nwait forever", "t.scn:3: wait: \"forever\" is not a duration"},
		{"plug usb 2-1 vid=46f4 pid=0001", "t.scn:1: plug: ifaces= is required"},
		{"plug usb 2-1 vid=zz pid=0001 ifaces=08/06/50", `vid="zz" is not a 16-bit hex number`},
		{"plug usb 3-1 vid=1 pid=1 ifaces=08/06/50", "buses 1 and 2"},
		{"plug usb 2-x vid=1 pid=1 ifaces=08/06/50", "is not BUS-PORT"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=08/06", "is not CC/SS/PP"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=08/06/50 color=red", `unknown key "color"`},
		{"plug usb 2-1 vid=1 vid=2 pid=1 ifaces=08/06/50", `key "vid" given twice`},
		{"plug usb 2-1 vid=1 pid=1 ifaces=08/06/50\nplug usb 2-1 vid=1 pid=1 ifaces=08/06/50", "t.scn:2: plug: port 2-1 is already in use"},
		{"plug usb 2-1.1 vid=1 pid=1 ifaces=08/06/50", "no hub at port 2-1"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=08/06/50\nplug usb 2-1.1 vid=1 pid=1 ifaces=08/06/50", "t.scn:2: plug: device at port 2-1 is not a hub"},
		{"unplug 1-1", "t.scn:1: unplug: no device at port 1-1"},
		{"scsi add 5:0:0:0", "no SCSI host 5"},
		{"scsi add 0:0:0", "is not H:C:T:L"},
		{"scsi remove 0:0:0:3", "no device 0:0:0:3"},
		{"scsi add 0:0:0:0\nscsi add 0:0:0:0", "t.scn:2: scsi add: 0:0:0:0 already present"},
		{`plug usb 2-1 vid=1 pid=1 ifaces=08/06/50 product="unterminated`, "unterminated"},
		{"seqnum 0", "not a positive number"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=08/06/50 type=99", "not a SCSI peripheral type"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=08/06/50 hid=keyboard", "gives 1 descriptor(s) for 0 HID"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=03/01/01 hid=joystick", "want keyboard, mouse or hex:DESCRIPTOR"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=03/01/01 hid=hex:a101", "collection(s) not ended"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=03/01/01\nhid input 2-1 report=00", "t.scn:2: hid input: device at port 2-1 has no bound HID interface"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=03/01/01 hid=keyboard\nhid input 2-1 report=0g", "is not 1 to 16384 bytes in hex"},
		{"plug usb 2-1 vid=1 pid=1 ifaces=03/01/01 hid=keyboard\nhid type 2-1 text=\"é\"", "no key for"},
		{"hid press 2-1", "hid: want hid input PORT"},
		{"hid input 2-1 report=00", "hid input: no device at port 2-1"},
	} {
		_, err := sim.ParseScenarioString("t.scn", tc.in)
		require.Error(t, err, tc.in)
		require.ErrorIs(t, err, sim.ErrBadScenario)
		var se *sim.ScenarioError
		require.True(t, errors.As(err, &se))
		require.Contains(t, err.Error(), tc.want)
	}
}

func FuzzScenario(f *testing.F) {
	seed, err := os.ReadFile("testdata/scenarios/qemu-capture.scn")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add("plug usb 1-1 vid=05e3 pid=0608 class=09/00/01 ifaces=09/00/00\nplug usb 1-1.2 vid=1 pid=2 ifaces=03/01/01,08/06/50\nunplug 1-1\n")
	f.Add("scsi add 0:0:1:0 type=5\nscsi remove 0:0:1:0\nwait 0s\nseqnum 99\n")
	f.Add("repeat 3\nplug usb 2-1 vid=1 pid=2 ifaces=03/01/01,08/06/50\ndup 2-1\nunplug 2-1\nend\n")
	f.Add("plug usb 2-1 vid=046d pid=c31c ifaces=03/01/01,03/01/02 hid=keyboard,mouse\nhid type 2-1 text=\"Hi\"\nhid input 2-1 iface=1 report=010203\ndup 2-1\nunbind 2-1 iface=0\nbind 2-1 iface=0 driver=usbhid\nunplug 2-1\n")
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := sim.ParseScenarioString("fuzz.scn", s)
		if err != nil {
			if !errors.Is(err, sim.ErrBadScenario) {
				t.Fatalf("error %v does not match ErrBadScenario", err)
			}
			return
		}
		src, err := sim.New(sc, sim.Config{SkipWaits: true})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		// A scenario that parsed runs to the end, and every event it makes
		// is a valid datagram.
		for {
			ev, err := src.Next(context.Background())
			if err != nil {
				if err.Error() != "EOF" {
					t.Fatalf("valid scenario failed at run time: %v", err)
				}
				return
			}
			b, _ := ev.MarshalBinary()
			if _, err := hotplug.Parse(b); err != nil {
				t.Fatalf("simulator made an invalid datagram: %v", err)
			}
		}
	})
}

// BenchmarkSimCycle measures the simulator on the storm workload: one
// plug/unplug cycle of a two-interface device (a HID interface and a
// usb-storage one with its SCSI disk) per op.
func BenchmarkSimCycle(b *testing.B) {
	var sb strings.Builder
	const cycles = 1000
	for range cycles {
		sb.WriteString("plug usb 2-1 vid=1234 pid=5678 serial=S ifaces=03/01/01,08/06/50\nunplug 2-1\n")
	}
	sc, err := sim.ParseScenarioString("storm.scn", sb.String())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	events := 0
	ops := 0
	for b.Loop() {
		src, _ := sim.New(sc, sim.Config{})
		for {
			if _, err := src.Next(context.Background()); err != nil {
				break
			}
			events++
		}
		ops += cycles
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(ops), "ns/cycle")
}

func TestScenarioRepeat(t *testing.T) {
	sc, err := sim.ParseScenarioString("r.scn", `
repeat 3
  plug usb 2-1 vid=1 pid=2 ifaces=03/01/01
  repeat 2
    wait 0s
  end
  unplug 2-1
end
repeat 0
  unplug 9-9   # never runs, never checked
end
`)
	require.NoError(t, err)
	var cmds []string
	for _, st := range sc.Steps {
		cmds = append(cmds, st.Cmd)
	}
	require.Equal(t, strings.Repeat("plug wait wait unplug ", 3), strings.Join(cmds, " ")+" ")
	require.Equal(t, 3, sc.Steps[0].Line)

	for _, tc := range []struct{ in, want string }{
		{"end", "t.scn:1: end without repeat"},
		{"repeat 2\nwait 0s", "t.scn:1: repeat without end"},
		{"repeat x\nend", `repeat: "x" is not a count`},
		{"repeat 300000\nwait 0s\nwait 0s\nend", "t.scn:1: repeat: more than"},
		{"repeat 1\nrepeat 1\nrepeat 1\nrepeat 1\nrepeat 1\nend\nend\nend\nend\nend", "t.scn:5: repeat: nested more than 4 deep"},
		{"repeat 2\nplug usb 2-1 vid=1 pid=2 ifaces=03/01/01\nend", "t.scn:2: plug: port 2-1 is already in use"},
	} {
		_, err := sim.ParseScenarioString("t.scn", tc.in)
		require.ErrorIs(t, err, sim.ErrBadScenario, tc.in)
		require.ErrorContains(t, err, tc.want)
	}
}

// TestSimDup checks the duplicate-add step: the device's whole tree is
// added again, with the bound drivers, exactly as a coldplug walk of the
// (unchanged) sysfs mirror reports it.
func TestSimDup(t *testing.T) {
	const plug = "plug usb 2-1 vid=46f4 pid=1 serial=S ifaces=03/01/01,08/06/50\n"
	run := func(scenario, dir string) []hotplug.Event {
		sc, err := sim.ParseScenarioString("d.scn", scenario)
		require.NoError(t, err)
		src, err := sim.New(sc, sim.Config{SysfsDir: dir})
		require.NoError(t, err)
		defer src.Close()
		return drain(t, src)
	}
	plugOnly := run(plug, "")
	dir := t.TempDir()
	all := run(plug+"dup 2-1\n", dir)
	dups := all[len(plugOnly):]
	var got []string
	for _, ev := range dups {
		got = append(got, fmt.Sprintf("%s %s %s %s", ev.Action, ev.Subsystem, ev.Name(), ev.Driver))
	}
	require.Equal(t, []string{
		"add usb 2-1 usb", "add usb 2-1:1.0 ", "add usb 2-1:1.1 usb-storage", "add scsi host1 ",
		"add scsi target1:0:0 ", "add scsi 1:0:0:0 sd", "add scsi_generic sg0 ", "add block sda ",
	}, got)
	walked, err := hotplug.Walk(dir, append(buses.Classes(), hotplug.ClassBlock), hotplug.OriginColdplug)
	require.NoError(t, err)
	envOf := func(ev hotplug.Event) []string {
		var out []string
		for k, v := range ev.Env() {
			if k != "SEQNUM" {
				out = append(out, k+"="+v)
			}
		}
		return out
	}
	byPath := map[string][]string{}
	for _, ev := range walked {
		byPath[ev.DevPath] = envOf(ev)
	}
	require.Len(t, byPath, len(dups))
	for _, ev := range dups {
		require.Equal(t, byPath[ev.DevPath], envOf(ev), ev.DevPath)
	}
	_, err = sim.ParseScenarioString("t.scn", "dup 2-1")
	require.ErrorContains(t, err, "t.scn:1: dup: no device at port 2-1")
}

func TestSimStormScenario(t *testing.T) {
	src, err := sim.New(loadScenario(t, "testdata/scenarios/storm.scn"), sim.Config{})
	require.NoError(t, err)
	defer src.Close()
	adds, removes := map[string]int{}, map[string]int{}
	for _, ev := range drain(t, src) {
		switch ev.Action {
		case hotplug.ActionAdd:
			adds[ev.Subsystem]++
		case hotplug.ActionRemove:
			removes[ev.Subsystem]++
		}
	}
	// Per cycle: 3 usb adds + 3 duplicates; host, target, LUN (+dups).
	require.Equal(t, 6000, adds["usb"])
	require.Equal(t, 3000, removes["usb"])
	require.Equal(t, 6000, adds["scsi"])
	require.Equal(t, 3000, removes["scsi"])
	require.Equal(t, 2000, adds["block"])
	require.Equal(t, 1000, removes["block"])
}
