package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

func TestParsePersonality(t *testing.T) {
	tests := []struct {
		in   string
		want personalitySpec
		err  string
	}{
		{in: "name=gadget,driver=usbstorage,vid=1d50,pid=6018",
			want: personalitySpec{Name: "gadget", Driver: "usbstorage", Keys: []matchArg{{"vid", "1d50"}, {"pid", "6018"}}, Score: 100}},
		{in: "name=g, driver=usbstorage, vid=0x1D50, pid=0001, score=7",
			want: personalitySpec{Name: "g", Driver: "usbstorage", Keys: []matchArg{{"vid", "0x1D50"}, {"pid", "0001"}}, Score: 7, hasScore: true}},
		{in: "name=g,driver=usbstorage,vid=1d50", // one product of a vendor
			want: personalitySpec{Name: "g", Driver: "usbstorage", Keys: []matchArg{{"vid", "1d50"}}, Score: 100}},
		{in: "name=cd,driver=sg,type=5,vendor=QEMU",
			want: personalitySpec{Name: "cd", Driver: "sg", Keys: []matchArg{{"type", "5"}, {"vendor", "QEMU"}}, Score: 100}},
		{in: "name=g,driver=usbstorage", err: "no match key (driver usbstorage matches on vid, pid, class, subclass, protocol, iface)"},
		{in: "name=g,vid=1", err: "driver is required"},
		{in: "name=g,driver=usbstorage,vid=1d50,pid=10000", err: `bad match: pid "10000" is not a 16-bit hex number`},
		{in: "name=g,driver=usbstorage,vid=xyz,pid=1", err: "not a 16-bit hex number"},
		{in: "name=g,driver=sg,vid=1,pid=1", err: `bad match: unknown key "vid" (want type, vendor, model, rev)`},
		{in: "name=g,driver=sg,type=32", err: `type "32" is not a number from 0 to 31`},
		{in: "name=g,driver=bogus,vid=1", err: `unknown driver "bogus" (have hidkbd, sg, usbstorage)`},
		{in: "name=kb,driver=hidkbd,vid=0627,pid=0001",
			want: personalitySpec{Name: "kb", Driver: "hidkbd", Keys: []matchArg{{"vid", "0627"}, {"pid", "0001"}}, Score: 100}},
		{in: "name=kb,driver=hidkbd,type=0", err: `bad match: unknown key "type" (want vid, pid, bus, name, usagepage, usage)`},
		{in: "name=usbstorage,driver=usbstorage,vid=1,pid=1", err: `name "usbstorage" is a driver's of the table`},
		{in: "name=sg,driver=usbstorage,vid=1,pid=1", err: `name "sg" is a driver's of the table`},
		{in: "name=g,driver=usbstorage,vid=1,pid=1,colour=red", err: `unknown key "colour"`},
		{in: "name=g,name=h,driver=usbstorage,vid=1,pid=1", err: "name given twice"},
		{in: "name=g,driver=usbstorage,vid=1,pid=1,score=high", err: "not an integer"},
		{in: "gadget", err: "not key=value"},
	}
	tbl := builtinDrivers()
	for _, tt := range tests {
		got, err := parsePersonality(tbl, tt.in)
		if tt.err != "" {
			require.ErrorContains(t, err, tt.err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		require.Len(t, got.match, len(tt.want.Keys))
		got.match = nil
		require.Equal(t, tt.want, got, tt.in)
	}
	var fl personalityFlags
	require.NoError(t, fl.Set("name=a,driver=usbstorage,vid=1,pid=2"))
	require.ErrorContains(t, fl.Set("name=a,driver=usbstorage,vid=3,pid=4"), `name "a" is already another personality's`)
	require.NoError(t, fl.Set("name=b,driver=sg,model=QEMU CD-ROM,score=5"))
	require.Equal(t, "name=a,driver=usbstorage,vid=1,pid=2,score=100 name=b,driver=sg,model=QEMU CD-ROM,score=5", fl.String())
}

// The daemon on a simulated bus with a VID:PID personality: the product's
// mass-storage interface goes to the personality (its score beats the class
// match), another stick still to usbstorage; unplugged, everything is
// freed; a monitor started late replays the whole lifecycle, which the
// checker accepts; the daemon shuts down with nothing leaked.
func TestServePersonalityOnSimBus(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte(
		"plug usb 2-1 vid=1d50 pid=6018 ifaces=08/06/50 serial=GADGET1\n"+
			"plug usb 2-2 vid=46f4 pid=0001 ifaces=08/06/50 serial=STICK\n"), 0o644))
	o := serveOptions{socket: filepath.Join(dir, "d.sock"), sim: scn, drivers: "usbstorage,sg",
		logFormat: "text", logLevel: "error", trace: "all", socketGroup: -1,
		termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second}
	require.NoError(t, o.personality.Set("name=gadget,driver=usbstorage,vid=1d50,pid=6018"))

	d := startServe(t, o)
	ctx := context.Background()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()

	byDriver := func() map[string][]serviceEntry {
		m := map[string][]serviceEntry{}
		for _, s := range inspectRegistry(d.reg).Services {
			// Only instances that run: while an interface is matched, the
			// losing candidate is attached too until the winner starts.
			if s.Active && !s.Starting {
				m[s.Driver] = append(m[s.Driver], s)
			}
		}
		return m
	}
	require.Eventually(t, func() bool { m := byDriver(); return len(m["gadget"]) == 1 && len(m["usbstorage"]) == 1 },
		5*time.Second, 10*time.Millisecond, "both sticks matched")
	doc := inspectRegistry(d.reg)
	props := func(id uint64) map[string]any {
		for _, s := range doc.Services {
			if s.ID == id {
				return s.Properties
			}
		}
		return nil
	}
	m := byDriver()
	g, u := m["gadget"][0], m["usbstorage"][0]
	require.Equal(t, "USBMassStorage", g.Class, "the personality runs usbstorage's driver")
	require.Len(t, g.Providers, 1)
	require.EqualValues(t, 0x1d50, props(g.Providers[0])["idVendor"])
	require.EqualValues(t, 0x46f4, props(u.Providers[0])["idVendor"])

	// A monitor started now replays everything since the daemon started.
	mctx, mcancel := context.WithCancel(ctx)
	var mon syncBuffer
	monDone := make(chan error, 1)
	go func() { monDone <- monitor(mctx, o.socket, monitorOptions{asJSON: true, replay: true}, &mon) }()
	require.Eventually(t, func() bool { return bytes.Contains(mon.Bytes(), []byte(`"step":"start"`)) },
		5*time.Second, 10*time.Millisecond, "the replay shows the drivers' starts")

	require.NoError(t, d.inject(wctx, "unplug 2-1\n"))
	require.Eventually(t, func() bool { m := byDriver(); return len(m["gadget"]) == 0 && len(m["usbstorage"]) == 1 },
		5*time.Second, 10*time.Millisecond, "the gadget's instance is freed, the other stick's stays")
	freed := func() bool {
		for _, e := range mustReadMonitor(t, mon.Bytes()) {
			if e.ServiceID == g.ID && e.Step == driver.StepFree {
				return true
			}
		}
		return false
	}
	require.Eventually(t, freed, 5*time.Second, 10*time.Millisecond, "the monitor shows the gadget's free")
	// Other terminations (the kernel's SCSI disks going as usbstorage
	// claims the sticks) may still be under way: a complete trace needs
	// them finished and seen by the monitor.
	waitMonitorCaughtUp(t, d.daemon, &mon)
	mcancel()
	require.NoError(t, <-monDone)

	evs := mustReadMonitor(t, mon.Bytes())
	require.NoError(t, lifecycletest.Validate(evs, true))
	var gadgetSteps []string
	for _, e := range evs {
		if e.ServiceID == g.ID {
			gadgetSteps = append(gadgetSteps, e.Step.String())
		}
	}
	require.Equal(t, []string{"attach", "start", "terminate", "willTerminate", "didTerminate", "stop", "detach", "free"},
		gadgetSteps)
	var first monitorEvent
	line, _, _ := bytes.Cut(mon.Bytes(), []byte("\n"))
	require.NoError(t, json.Unmarshal(line, &first))
	require.Equal(t, uint64(1), first.Seq, "the replay starts at the daemon's first event")
	require.Equal(t, "kernel", first.Kind)

	require.NoError(t, d.stop(), "%s", d.log.Bytes())
	require.False(t, strings.Contains(d.log.String(), "leaked"), "%s", d.log.Bytes())
}

func TestMonitorHistoryBounded(t *testing.T) {
	h := newMonitorHub()
	h.limit = 3
	var live []uint64
	cancel := h.subscribe(func(e monitorEvent) { live = append(live, e.Seq) })
	defer cancel()
	for i := 0; i < 8; i++ {
		h.publish(monitorEvent{Kind: "lifecycle", Step: "publish"})
	}
	ev, dropped := h.History()
	require.Equal(t, uint64(5), dropped)
	require.Len(t, ev, 3)
	require.Equal(t, []uint64{6, 7, 8}, []uint64{ev[0].Seq, ev[1].Seq, ev[2].Seq})
	require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 7, 8}, live)
	require.LessOrEqual(t, len(h.history), 2*h.limit)
}

func mustReadMonitor(t *testing.T, out []byte) []driver.LifecycleEvent {
	t.Helper()
	evs, err := lifecycletest.ReadMonitorJSON(bytes.NewReader(out))
	require.NoError(t, err)
	return evs
}

// waitMonitorCaughtUp waits until the daemon's registry is quiet and the
// monitor has printed every event the daemon published until then.
func waitMonitorCaughtUp(t *testing.T, d *daemon, mon *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, d.reg.WaitQuiet(ctx))
	hist, _ := d.hub.History()
	require.NotEmpty(t, hist)
	last := hist[len(hist)-1].Seq
	require.Eventually(t, func() bool {
		for _, line := range bytes.Split(mon.Bytes(), []byte("\n")) {
			var e struct {
				Seq uint64 `json:"seq"`
			}
			if json.Unmarshal(line, &e) == nil && e.Seq >= last {
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "the monitor never printed event %d", last)
}

// --personality works for any driver of the table: an sg personality for
// one SCSI model takes that disk from sg's own personality (its score beats
// the default), the other disk stays with sg; unloading the personality
// frees its instance; shutdown leaks nothing.
func TestServeSGPersonalityOnSimBus(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte(
		"scsi add 0:0:0:0 vendor=ACME model=VAULT\n"+
			"scsi add 0:0:0:1 vendor=QEMU model=\"QEMU HARDDISK\"\n"), 0o644))
	o := serveOptions{socket: filepath.Join(dir, "d.sock"), sim: scn, drivers: "sg",
		logFormat: "text", logLevel: "error", trace: "all", socketGroup: -1,
		termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second}
	require.NoError(t, o.personality.Set("name=vault,driver=sg,vendor=ACME,model=VAULT"))

	d := startServe(t, o)
	running := func() map[string][]serviceEntry {
		m := map[string][]serviceEntry{}
		for _, s := range inspectRegistry(d.reg).Services {
			if s.Active && !s.Starting && s.Driver != "" {
				m[s.Driver] = append(m[s.Driver], s)
			}
		}
		return m
	}
	require.Eventually(t, func() bool { m := running(); return len(m["vault"]) == 1 && len(m["sg"]) == 1 },
		5*time.Second, 10*time.Millisecond, "both disks matched: %v", running())
	m := running()
	require.Equal(t, "SCSIGenericBlock", m["vault"][0].Class, "the personality runs sg's driver")
	doc := inspectRegistry(d.reg)
	for _, s := range doc.Services {
		if s.ID == m["vault"][0].Providers[0] {
			require.Equal(t, "ACME", s.Properties["vendor"])
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := adminUnload(ctx, d.reg, unloadArgs{Driver: "vault"})
	require.NoError(t, err)
	require.Empty(t, running()["vault"])
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
	require.NotContains(t, d.log.String(), "leaked")

	// The daemon's whole lifecycle trace, shutdown included, keeps the
	// contract.
	hist, dropped := d.hub.History()
	require.Zero(t, dropped)
	var b bytes.Buffer
	for i := range hist {
		require.NoError(t, json.NewEncoder(&b).Encode(&hist[i]))
	}
	evs := mustReadMonitor(t, b.Bytes())
	require.NotEmpty(t, evs)
	require.NoError(t, lifecycletest.Validate(evs, true))
}
