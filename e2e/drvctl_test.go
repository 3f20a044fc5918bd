//go:build e2e && linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/e2e/agentproto"
	"github.com/drvkit/drvkit/refcount"
)

// The drvctl scenarios: the daemon runs in the guest on the real kernel
// (netlink uevents, coldplug, gousb, SG_IO), applications are e2e-app
// processes (e2e/guestapp), and every assertion is on drvctl's own view:
// `drvctl inspect -o json`, the lifecycle trace `drvctl monitor --replay -o
// json` recorded from the daemon's first event (checked on the host with
// lifecycletest.Validate), `drvctl leaks -o json`, and the daemon's exit
// status and last words on SIGTERM.

// buildGuestBins builds drvctl (cgo: gousb; prepare.sh copies the
// libraries it links), e2e-app and driver/scsi's test binary (scsi.test,
// for TestSGReal on the guest's real sg nodes: SG_IO needs no cgo) and
// driver/hid's (hid.test, for TestHidrawReal on its hidraw nodes), and
// the executables of the bundles (hidkbd, usbstorage) into a temporary
// directory.
func buildGuestBins(ctx context.Context) ([]string, error) {
	dir, err := os.MkdirTemp("", "drvkit-e2e-bins-")
	if err != nil {
		return nil, err
	}
	root := repoRoot()
	var out []string
	for _, b := range []struct {
		out, pkg, cgo string
		test          bool
	}{
		{"drvctl", "./cmd/drvctl", "1", false},
		{"e2e-app", "./e2e/guestapp", "0", false},
		{"scsi.test", "./driver/scsi", "0", true},
		{"hid.test", "./driver/hid", "0", true},
		{"hidkbd", "./examples/bundles/hidkbd", "0", false},         // the hidkbd-oop bundle's executable
		{"usbstorage", "./examples/bundles/usbstorage", "0", false}, // the usbstorage-oop bundle's (TestDrvctlUSBHold)
	} {
		// -s -w: a smaller initramfs, a faster boot; stacks still
		// symbolize (pclntab stays).
		args := []string{"build"}
		if b.test {
			args = []string{"test", "-c"}
		}
		args = append(args, "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if o, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("e2e: building %s: %w\n%s", b.pkg, err, o)
		}
		out = append(out, filepath.Join(dir, b.out))
	}
	return out, nil
}

const (
	drvSock    = "/run/drvkit.sock"
	monitorOut = "/tmp/monitor.json"
)

// inspectDoc is `drvctl inspect -o json` (schema_version 2: empty fields omitted).
type inspectDoc struct {
	SchemaVersion int        `json:"schema_version"`
	Services      []svcEntry `json:"services"`
}

type svcEntry struct {
	ID         uint64         `json:"id"`
	Class      string         `json:"class"`
	Name       string         `json:"name"`
	Driver     string         `json:"driver"`
	Active     bool           `json:"active"`
	Starting   bool           `json:"starting"` // Start has not returned: applications cannot open it yet
	Providers  []uint64       `json:"providers"`
	Clients    []uint64       `json:"clients"`
	OpenBy     []uint64       `json:"open_by"`
	Properties map[string]any `json:"properties"`
}

func (d *inspectDoc) byID(id uint64) *svcEntry {
	for i := range d.Services {
		if d.Services[i].ID == id {
			return &d.Services[i]
		}
	}
	return nil
}

// find returns the services for which f holds.
func (d *inspectDoc) find(f func(*svcEntry) bool) []*svcEntry {
	var out []*svcEntry
	for i := range d.Services {
		if f(&d.Services[i]) {
			out = append(out, &d.Services[i])
		}
	}
	return out
}

func (d *inspectDoc) withDriver(name string) []*svcEntry {
	return d.find(func(s *svcEntry) bool { return s.Driver == name })
}

func (d *inspectDoc) String() string {
	var b strings.Builder
	for _, s := range d.Services {
		fmt.Fprintf(&b, "  #%d %s %q driver=%q active=%v providers=%v clients=%v open_by=%v\n",
			s.ID, s.Class, s.Name, s.Driver, s.Active, s.Providers, s.Clients, s.OpenBy)
	}
	return b.String()
}

func (s *svcEntry) prop(k string) string {
	v, ok := s.Properties[k]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

// propHex is an integer property as lsusb prints it.
func (s *svcEntry) propHex(k string) string {
	f, ok := s.Properties[k].(float64)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%04x", int(f))
}

// appLine is one line of e2e-app.
type appLine struct {
	Event       string `json:"event"`
	Pid         int    `json:"pid"`
	Service     uint64 `json:"service"`
	Client      uint64 `json:"client"`
	Class       string `json:"class"`
	Personality string `json:"personality"`
	Vendor      string `json:"vendor"`
	Product     string `json:"product"`
	Revision    string `json:"revision"`
	Blocks      uint64 `json:"blocks"`
	BlockSize   uint32 `json:"block_size"`
	LBA         uint64 `json:"lba"`
	Data        string `json:"data"`
	Reads       int    `json:"reads"`
	Type        string `json:"type"`
	Cause       string `json:"cause"` // a notification's cause
	Error       string `json:"error"`
	NoDevice    bool   `json:"no_device"`
	Terminated  bool   `json:"terminated"`
	MonoNs      int64  `json:"mono_ns"` // read-error: guest CLOCK_MONOTONIC
	Seq         uint64 `json:"seq"`     // -hid-read: the report's sequence number
	Pressed     []int  `json:"pressed"` // -hid-read: the keys down
	Events      int    `json:"events"`  // -hid-read: key presses and releases so far
}

func parseAppLines(t *testing.T, out string) []appLine {
	t.Helper()
	var lines []appLine
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var l appLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "e2e-app line %q", sc.Text())
		lines = append(lines, l)
	}
	return lines
}

func findLine(lines []appLine, event string) *appLine {
	for i := range lines {
		if lines[i].Event == event {
			return &lines[i]
		}
	}
	return nil
}

// daemon drives one `drvctl serve` in a guest.
type daemon struct {
	t *testing.T
	m *Machine
}

// startDaemon starts `drvctl serve` with args and `drvctl monitor --replay`
// recording into monitorOut, and waits until the daemon answers.
func startDaemon(t *testing.T, ctx context.Context, m *Machine, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, m: m}
	argv := append([]string{"drvctl", "serve", "--socket", drvSock, "--log-level", "debug"}, args...)
	_, err := m.Agent.Start(ctx, "serve", argv...)
	require.NoError(t, err)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// The daemon's log says why; stop it to read it (it may be gone).
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = m.Agent.Signal(cctx, "serve", syscall.SIGTERM)
		if r, err := m.Agent.Wait(cctx, "serve"); err == nil {
			t.Logf("drvctl serve exit %d %s, log tail:\n%s", r.Exit, r.Signal, tail(quiet(r.Stderr), 60))
		}
	})
	d.poll(ctx, "the daemon's socket", func() (bool, string) {
		r, err := m.Agent.Exec(ctx, "drvctl", "inspect", "--socket", drvSock, "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		return r.Exit == 0, r.Stderr
	})
	_, err = m.Agent.Start(ctx, "monitor", "sh", "-c", "exec drvctl monitor --replay -o json --socket "+drvSock+" >"+monitorOut)
	require.NoError(t, err)
	return d
}

// poll calls f every 100 ms until it returns true; past the step timeout
// the test fails with f's last word.
func (d *daemon) poll(ctx context.Context, what string, f func() (bool, string)) {
	d.t.Helper()
	sctx, cancel := step(ctx)
	defer cancel()
	var last string
	for {
		ok, detail := f()
		if ok {
			return
		}
		last = detail
		select {
		case <-sctx.Done():
			d.t.Fatalf("waiting for %s: %v; last:\n%s", what, sctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *daemon) drvctl(ctx context.Context, args ...string) *agentproto.ExecResult {
	d.t.Helper()
	r, err := d.m.Agent.Exec(ctx, append(append([]string{"drvctl"}, args...), "--socket", drvSock)...)
	require.NoError(d.t, err)
	return r
}

func (d *daemon) inspect(ctx context.Context) *inspectDoc {
	d.t.Helper()
	r := d.drvctl(ctx, "inspect", "-o", "json")
	require.Zero(d.t, r.Exit, "drvctl inspect: %s", r.Stderr)
	var doc inspectDoc
	require.NoError(d.t, json.Unmarshal([]byte(r.Stdout), &doc))
	require.Equal(d.t, 2, doc.SchemaVersion)
	return &doc
}

// waitTree polls inspect until f accepts it, and returns that view.
func (d *daemon) waitTree(ctx context.Context, what string, f func(*inspectDoc) bool) *inspectDoc {
	d.t.Helper()
	var doc *inspectDoc
	d.poll(ctx, what, func() (bool, string) {
		doc = d.inspect(ctx)
		return f(doc), doc.String()
	})
	return doc
}

// lifecycle reads the monitor's lifecycle events so far, back as the
// registry's events.
func (d *daemon) lifecycle(ctx context.Context) []driver.LifecycleEvent {
	d.t.Helper()
	r, err := d.m.Agent.Exec(ctx, "grep", `"kind":"lifecycle"`, monitorOut)
	require.NoError(d.t, err)
	return parseLifecycle(d.t, r.Stdout)
}

// checkTrace waits until the trace so far passes the lifecycle checker with
// the completeness rule (every terminated service stopped, detached and
// freed) and returns it. The monitor starts with the daemon's first event
// (--replay), so the trace is whole.
func (d *daemon) checkTrace(ctx context.Context) []driver.LifecycleEvent {
	d.t.Helper()
	var evs []driver.LifecycleEvent
	d.poll(ctx, "a complete lifecycle trace", func() (bool, string) {
		evs = d.lifecycle(ctx)
		if len(evs) == 0 {
			return false, "no lifecycle events"
		}
		if err := lifecycletest.Validate(evs, true); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return evs
}

// checkNoLeaks waits until `drvctl leaks -o json` reports nothing that
// should be gone.
func (d *daemon) checkNoLeaks(ctx context.Context) {
	d.t.Helper()
	d.poll(ctx, "no leaks", func() (bool, string) {
		r := d.drvctl(ctx, "leaks", "-o", "json")
		if r.Exit != 0 {
			return false, r.Stderr
		}
		var rep refcount.Report
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
			return false, err.Error()
		}
		return len(rep.Objects) == 0, r.Stdout
	})
}

// stop sends SIGTERM and requires a clean exit: every service freed and
// nothing leaked, in the daemon's words.
func (d *daemon) stop(ctx context.Context) *agentproto.ExecResult {
	d.t.Helper()
	require.NoError(d.t, d.m.Agent.Signal(ctx, "serve", syscall.SIGTERM))
	r, err := d.m.Agent.Wait(ctx, "serve")
	require.NoError(d.t, err)
	require.Zero(d.t, r.Exit, "drvctl serve exited with %d (%s):\n%s", r.Exit, r.Signal, tail(r.Stderr, 40))
	require.Contains(d.t, r.Stderr, "every service freed, nothing leaked")
	// The monitor saw its stream end with the daemon.
	mr, err := d.m.Agent.Wait(ctx, "monitor")
	require.NoError(d.t, err)
	require.Contains(d.t, mr.Stderr, "drvctl monitor: the daemon shut down")
	return r
}

// quiet drops the log lines of the test's own polling.
func quiet(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `msg="admin call"`) && !strings.Contains(l, `msg="client disconnected"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stepsOf returns the steps of one service, in order ("detach" with its
// provider).
func stepsOf(evs []driver.LifecycleEvent, id uint64) []string {
	var out []string
	for _, e := range evs {
		if e.ServiceID == id {
			out = append(out, e.Step.String())
		}
	}
	return out
}

// requireTeardown checks that id went terminate → … → stop → detach → free,
// in that order, with nothing after the free.
func requireTeardown(t *testing.T, evs []driver.LifecycleEvent, id uint64) {
	t.Helper()
	steps := stepsOf(evs, id)
	want := []string{"terminate", "stop", "detach", "free"}
	i := 0
	for _, s := range steps {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	require.Equal(t, len(want), i, "service #%d: steps %v lack %v in order", id, steps, want)
	require.Equal(t, "free", steps[len(steps)-1], "service #%d: steps %v", id, steps)
}

// usbStick finds the stick's USBDevice → USBInterface → driver instance,
// started (an application can open it).
func usbStick(doc *inspectDoc, vid, pid, drv string) (dev, iface, inst *svcEntry) {
	for _, s := range doc.withDriver(drv) {
		if !s.Active || s.Starting || len(s.Providers) != 1 {
			continue
		}
		ifc := doc.byID(s.Providers[0])
		if ifc == nil || ifc.Class != "USBInterface" || len(ifc.Providers) != 1 {
			continue
		}
		dv := doc.byID(ifc.Providers[0])
		if dv == nil || dv.Class != "USBDevice" || dv.propHex("idVendor") != vid || dv.propHex("idProduct") != pid {
			continue
		}
		return dv, ifc, s
	}
	return nil, nil, nil
}

// scsiDisk finds a SCSIDevice nub of vendor QEMU on the virtio host (or
// the USB one) with its sg instance.
func scsiDisk(doc *inspectDoc, usb bool) (dev, inst *svcEntry) {
	for _, s := range doc.withDriver("sg") {
		if !s.Active || s.Starting || len(s.Providers) != 1 {
			continue
		}
		d := doc.byID(s.Providers[0])
		if d == nil || d.Class != "SCSIDevice" || strings.Contains(d.prop("devpath"), "/usb") != usb {
			continue
		}
		return d, s
	}
	return nil, nil
}

// app runs e2e-app to completion.
func (d *daemon) app(ctx context.Context, args ...string) []appLine {
	d.t.Helper()
	r, err := d.m.Agent.Exec(ctx, append([]string{"e2e-app", "-socket", drvSock}, args...)...)
	require.NoError(d.t, err)
	lines := parseAppLines(d.t, r.Stdout)
	require.Zero(d.t, r.Exit, "e2e-app %v: %s %s", args, r.Stdout, r.Stderr)
	return lines
}

// appStatus reads the status file of a background e2e-app.
func (d *daemon) appStatus(ctx context.Context, file string) []appLine {
	d.t.Helper()
	r, err := d.m.Agent.Exec(ctx, "cat", file)
	require.NoError(d.t, err)
	return parseAppLines(d.t, r.Stdout)
}

func (d *daemon) waitApp(ctx context.Context, file, event string) []appLine {
	d.t.Helper()
	var lines []appLine
	d.poll(ctx, "e2e-app event "+event, func() (bool, string) {
		lines = d.appStatus(ctx, file)
		if l := findLine(lines, "error"); l != nil {
			d.t.Fatalf("e2e-app failed: %s", l.Error)
		}
		return findLine(lines, event) != nil, fmt.Sprintf("%+v", lines)
	})
	return lines
}

// readDepth is how many reads the reader of scenario 2 keeps outstanding.
// With one, the unplug often falls between two reads: the next read then
// starts after drvkit terminated the service and fails, correctly, with
// ErrTerminated (9 of 25 rounds of TestDrvctlUnplugReadSoak at depth 1). A
// queue, as storage applications keep, has a read in flight whenever the
// stick goes.
const readDepth = 4

// readBlocks per read in the unplug-during-read scenarios: with 1-block
// reads the bus was idle most of the time, and on a loaded host an unplug
// could fall between the readers' transfers (every read then failed with
// ErrTerminated, none with ErrNoDevice: seen once in a CI-like run).
const readBlocks = 64

// readErrors checks how each of the depth readers of e2e-app -read-loop
// ended: with ErrNoDevice (the device vanished under the read) or
// ErrTerminated (the read began once the service was terminated), never
// anything else. It returns the reads done and how many ended with
// ErrNoDevice.
func readErrors(t *testing.T, lines []appLine, depth int) (reads, noDevice int) {
	t.Helper()
	n := 0
	for _, l := range lines {
		if l.Event != "read-error" {
			continue
		}
		n++
		reads += l.Reads
		require.True(t, l.NoDevice || l.Terminated, "a read failed with neither ErrNoDevice nor ErrTerminated: %s", l.Error)
		if l.NoDevice {
			noDevice++
		}
	}
	require.Equal(t, depth, n, "every reader reports its error: %+v", lines)
	return reads, noDevice
}

// timed runs a subtest and records its duration for the summary.
func timed(t *testing.T, name string, f func(t *testing.T)) bool {
	t0 := time.Now()
	ok := t.Run(name, f)
	record("  %-46s %7v  %s", t.Name()+"/"+name, time.Since(t0).Round(time.Millisecond), map[bool]string{true: "PASS", false: "FAIL"}[ok])
	return ok
}

// kernelStick is what the kernel reports for the USB stick's SCSI disk
// (sysfs vendor and model), read before drvkit takes it.
func kernelStick(t *testing.T, ctx context.Context, a *Agent) agentproto.SGDevice {
	t.Helper()
	var sgs []agentproto.SGDevice
	require.NoError(t, a.Call(ctx, agentproto.OpSGList, nil, &sgs))
	for _, sg := range sgs {
		if sg.IsUSB() {
			return sg
		}
	}
	t.Fatalf("no sg node on USB: %+v", sgs)
	return agentproto.SGDevice{}
}

// usbInterfaceDriver is the kernel driver bound to the stick's
// mass-storage interface, from its sysfs driver link ("" when none).
func usbInterfaceDriver(t *testing.T, ctx context.Context, a *Agent) string {
	t.Helper()
	r, err := a.Exec(ctx, "sh", "-c", `for i in /sys/bus/usb/devices/*:1.0; do
	[ "$(cat $i/../idVendor)" = 46f4 ] || continue
	l=$(readlink $i/driver) && basename "$l"; exit 0
done`)
	require.NoError(t, err)
	return strings.TrimSpace(r.Stdout)
}

// TestDrvctlUSBAndSCSI runs scenarios 1–5 of issue 9 on one machine, in
// order, each leaving the machine as the next expects: the daemon and the
// monitor run throughout, so the final trace covers everything.
func TestDrvctlUSBAndSCSI(t *testing.T) {
	ctx, m := scenario(t, Config{USBSerial: "DRVCTL-E2E"})
	a := m.Agent
	sctx, cancel := step(ctx)
	defer cancel()
	// Both disks fully up under the kernel's drivers before drvctl starts:
	// drvctl must find them at coldplug, not through their add events.
	for _, bus := range []string{"/usb", "/virtio"} {
		_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: bus})
		require.NoError(t, err)
	}
	kernel := kernelStick(t, sctx, a)
	require.Equal(t, "usb-storage", usbInterfaceDriver(t, sctx, a))
	cancel()

	d := startDaemon(t, ctx, m, "--drivers", "usbstorage,sg")
	const lba, pattern = 8, "drvkit e2e: written through usbstorage"

	var stick *svcEntry // the usbstorage instance of the moment
	if !timed(t, "1-coldplug", func(t *testing.T) {
		d.t = t
		doc := d.waitTree(ctx, "USBDevice → USBInterface → usbstorage and SCSIDevice → sg", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			_, s := scsiDisk(doc, false)
			return u != nil && s != nil
		})
		dev, iface, inst := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		require.Equal(t, "USBMassStorage", inst.Class)
		require.Equal(t, "DRVCTL-E2E", dev.prop("serial"))
		require.Equal(t, "8", iface.prop("bInterfaceClass"))
		require.Contains(t, dev.Clients, iface.ID)
		require.Contains(t, iface.Clients, inst.ID)
		disk, sgInst := scsiDisk(doc, false)
		require.Equal(t, "QEMU", strings.TrimSpace(disk.prop("vendor")))
		require.Equal(t, "SCSIGenericBlock", sgInst.Class)
		require.Contains(t, disk.Clients, sgInst.ID)
		stick = inst
		// usbstorage took the interface from the kernel's driver.
		require.Equal(t, "usbfs", usbInterfaceDriver(t, ctx, a))
		evs := d.checkTrace(ctx)
		require.Equal(t, []string{"attach", "start"}, stepsOf(evs, inst.ID)[:2])
		d.checkNoLeaks(ctx)
		t.Logf("tree at coldplug:\n%s", doc)
	}) {
		return
	}

	timed(t, "5-inquiry", func(t *testing.T) {
		d.t = t
		sgApp := d.app(ctx, "-driver", "sg")
		q := findLine(sgApp, "inquiry")
		require.NotNil(t, q)
		require.Equal(t, "QEMU", q.Vendor, "INQUIRY through SG_IO")
		require.Equal(t, "QEMU HARDDISK", q.Product)
		require.Equal(t, "sg", findLine(sgApp, "opened").Personality)

		usbApp := d.app(ctx, "-driver", "usbstorage")
		q = findLine(usbApp, "inquiry")
		require.NotNil(t, q)
		require.Equal(t, kernel.Vendor, q.Vendor, "INQUIRY through the user-space bulk-only driver is what the kernel reported")
		require.Equal(t, kernel.Model, q.Product)
		require.Equal(t, uint32(512), q.BlockSize)
		require.Equal(t, uint64(16<<20/512), q.Blocks)
		t.Logf("SG_IO: %q %q; bulk-only: %q %q %q (kernel: %q %q)", sgApp[1].Vendor, sgApp[1].Product, q.Vendor, q.Product, q.Revision, kernel.Vendor, kernel.Model)
		// Both applications opened, called and exited: their user clients
		// went terminate → stop → detach → free, and nothing is left over.
		var clients []uint64
		for _, app := range [][]appLine{sgApp, usbApp} {
			o := findLine(app, "opened")
			require.NotNil(t, o, "%+v", app)
			clients = append(clients, o.Client)
		}
		// The daemon sees an application's exit asynchronously.
		d.poll(ctx, "both applications' user clients freed in the trace", func() (bool, string) {
			evs := d.lifecycle(ctx)
			for _, id := range clients {
				if s := stepsOf(evs, id); len(s) == 0 || s[len(s)-1] != "free" {
					return false, fmt.Sprintf("user client #%d: %v", id, s)
				}
			}
			return true, ""
		})
		evs := d.checkTrace(ctx)
		for _, id := range clients {
			requireTeardown(t, evs, id)
		}
		d.checkNoLeaks(ctx)
	})

	timed(t, "3-scsi-unplug-held", func(t *testing.T) {
		d.t = t
		const status, release = "/tmp/sgholder.status", "/tmp/sgholder.release"
		_, err := a.Start(ctx, "sgholder", "e2e-app", "-socket", drvSock, "-driver", "sg", "-hold",
			"-close-after", release, "-status", status)
		require.NoError(t, err)
		lines := d.waitApp(ctx, status, "holding")
		opened := findLine(lines, "opened")
		doc := d.inspect(ctx)
		disk, inst := scsiDisk(doc, false)
		require.Equal(t, inst.ID, opened.Service)
		require.Contains(t, inst.OpenBy, opened.Client, "the user client holds sg open")

		sctx, cancel := step(ctx)
		defer cancel()
		require.NoError(t, m.UnplugSCSI(sctx))
		lines = d.waitApp(ctx, status, "waiting")
		var notes []string
		for _, l := range lines {
			if l.Event == "notification" {
				notes = append(notes, l.Type)
			}
		}
		require.Equal(t, []string{"ServiceIsTerminated", "ServiceIsRequestingClose"}, notes)
		// Held open: terminated, not freed; its provider waits for it.
		doc = d.inspect(ctx)
		held := doc.byID(inst.ID)
		require.NotNil(t, held, "freed while a client holds it open:\n%s", doc)
		require.False(t, held.Active)
		require.Contains(t, held.OpenBy, opened.Client)
		evs := d.lifecycle(ctx)
		require.NotContains(t, stepsOf(evs, inst.ID), "stop", "stopped while open")

		_, err = a.Exec(ctx, "touch", release)
		require.NoError(t, err)
		r, err := a.Wait(ctx, "sgholder")
		require.NoError(t, err)
		require.Zero(t, r.Exit, "%s %s", r.Stdout, r.Stderr)
		d.waitTree(ctx, "the disk, its sg instance and the user client freed", func(doc *inspectDoc) bool {
			return doc.byID(inst.ID) == nil && doc.byID(disk.ID) == nil && doc.byID(opened.Client) == nil
		})
		evs = d.checkTrace(ctx)
		for _, id := range []uint64{opened.Client, inst.ID, disk.ID} {
			requireTeardown(t, evs, id)
		}
		d.checkNoLeaks(ctx)

		// Replugged: matched again, and it answers.
		_, err = m.PlugSCSI(sctx)
		require.NoError(t, err)
		doc = d.waitTree(ctx, "SCSIDevice → sg after the replug", func(doc *inspectDoc) bool {
			d2, _ := scsiDisk(doc, false)
			return d2 != nil && d2.ID != disk.ID
		})
		q := findLine(d.app(ctx, "-driver", "sg"), "inquiry")
		require.Equal(t, "QEMU", q.Vendor)
	})

	timed(t, "2-usb-unplug-during-read", func(t *testing.T) {
		d.t = t
		const status = "/tmp/reader.status"
		_, err := a.Start(ctx, "reader", "e2e-app", "-socket", drvSock, "-driver", "usbstorage",
			"-write", fmt.Sprint(lba), "-pattern", pattern, "-read-loop", fmt.Sprint(lba), "-depth", fmt.Sprint(readDepth),
			"-blocks", fmt.Sprint(readBlocks), "-status", status)
		require.NoError(t, err)
		lines := d.waitApp(ctx, status, "reading")
		opened := findLine(lines, "opened")
		require.Equal(t, stick.ID, opened.Service)
		doc := d.inspect(ctx)
		dev, iface, inst := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		require.Equal(t, stick.ID, inst.ID)

		sctx, cancel := step(ctx)
		defer cancel()
		t0 := time.Now()
		require.NoError(t, m.UnplugUSB(sctx))
		r, err := a.Wait(sctx, "reader")
		require.NoError(t, err)
		lines = parseAppLines(t, r.Stdout)
		reads, noDevice := readErrors(t, lines, readDepth)
		t.Logf("%d reads, %d of %d readers failed with ErrNoDevice (the others: ErrTerminated), done %v after the unplug",
			reads, noDevice, readDepth, time.Since(t0).Round(time.Millisecond))
		require.Positive(t, reads)
		require.Positive(t, noDevice, "the reads in flight when the stick went must fail with ErrNoDevice:\n%s", r.Stdout)
		require.NotNil(t, findLine(lines, "closed"))

		d.waitTree(ctx, "the stick's services freed", func(doc *inspectDoc) bool {
			return doc.byID(dev.ID) == nil && doc.byID(iface.ID) == nil && doc.byID(inst.ID) == nil && doc.byID(opened.Client) == nil
		})
		evs := d.checkTrace(ctx)
		for _, id := range []uint64{opened.Client, inst.ID, iface.ID, dev.ID} {
			requireTeardown(t, evs, id)
		}
		d.checkNoLeaks(ctx)

		attempts, err := m.PlugUSB(sctx, "")
		require.NoError(t, err)
		doc = d.waitTree(ctx, "usbstorage matched the replugged stick", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			return u != nil && u.ID != inst.ID
		})
		_, _, stick = usbStick(doc, USBVendor, USBProduct, "usbstorage")
		got := findLine(d.app(ctx, "-driver", "usbstorage", "-read", fmt.Sprint(lba)), "read")
		require.NotNil(t, got)
		require.Equal(t, pattern, got.Data, "the replugged stick holds what the client wrote")
		t.Logf("replug: %d device_add attempt(s)", attempts)
	})

	timed(t, "4-sigkill-then-unplug", func(t *testing.T) {
		d.t = t
		const status = "/tmp/victim.status"
		_, err := a.Start(ctx, "victim", "e2e-app", "-socket", drvSock, "-driver", "usbstorage", "-hold", "-status", status)
		require.NoError(t, err)
		opened := findLine(d.waitApp(ctx, status, "holding"), "opened")
		doc := d.inspect(ctx)
		dev, iface, inst := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		require.Contains(t, inst.OpenBy, opened.Client)

		require.NoError(t, a.Signal(ctx, "victim", syscall.SIGKILL))
		r, err := a.Wait(ctx, "victim")
		require.NoError(t, err)
		require.Equal(t, "killed", r.Signal)
		d.waitTree(ctx, "the dead client's user client freed and the device closed", func(doc *inspectDoc) bool {
			s := doc.byID(inst.ID)
			return doc.byID(opened.Client) == nil && s != nil && s.Active && len(s.OpenBy) == 0
		})

		sctx, cancel := step(ctx)
		defer cancel()
		require.NoError(t, m.UnplugUSB(sctx))
		d.waitTree(ctx, "the stick's services freed", func(doc *inspectDoc) bool {
			return doc.byID(dev.ID) == nil && doc.byID(iface.ID) == nil && doc.byID(inst.ID) == nil
		})
		evs := d.checkTrace(ctx)
		for _, id := range []uint64{opened.Client, inst.ID, iface.ID, dev.ID} {
			requireTeardown(t, evs, id)
		}
		d.checkNoLeaks(ctx)

		// drvkit lets go of a stick: the kernel's usb-storage gets it
		// back. Replug (usbstorage takes it), then unload usbstorage.
		mark := a.UeventMark()
		_, err = m.PlugUSB(sctx, "")
		require.NoError(t, err)
		d.waitTree(ctx, "usbstorage matched the replugged stick", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			return u != nil
		})
		require.Equal(t, "usbfs", usbInterfaceDriver(t, ctx, a))
		ur := d.drvctl(ctx, "unload", "usbstorage")
		require.Zero(t, ur.Exit, "%s %s", ur.Stdout, ur.Stderr)
		require.Contains(t, ur.Stdout, "unloaded usbstorage: every instance freed")
		require.Equal(t, "usb-storage", usbInterfaceDriver(t, ctx, a), "the kernel driver is re-attached")
		_, err = a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "block", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "disk"}})
		require.NoError(t, err, "/dev/sdX reappears")
		// …and drvctl sees the kernel's disk on it, which sg serves.
		d.waitTree(ctx, "SCSIDevice (USB) → sg", func(doc *inspectDoc) bool {
			_, s := scsiDisk(doc, true)
			return s != nil && len(doc.withDriver("usbstorage")) == 0
		})
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)
	})

	t0 := time.Now()
	r := d.stop(ctx)
	// The whole trace, from the daemon's first event to the monitor's end.
	mon, err := a.Exec(ctx, "grep", `"kind":"lifecycle"`, monitorOut)
	require.NoError(t, err)
	evs := parseLifecycle(t, mon.Stdout)
	require.NoError(t, lifecycletest.Validate(evs, true))
	record("  %-46s %7v  %d lifecycle events", t.Name()+"/shutdown", time.Since(t0).Round(time.Millisecond), len(evs))
	t.Logf("daemon's last words:\n%s", tail(r.Stderr, 3))
}

// TestDrvctlGadgetPersonality is scenario 6: a dummy_hcd mass-storage
// gadget with a custom VID:PID, matched by a VID:PID personality declared
// on drvctl's command line, which beats usbstorage's class match for that
// product while the QEMU stick keeps going to usbstorage.
func TestDrvctlGadgetPersonality(t *testing.T) {
	ctx, m := scenario(t, Config{})
	a := m.Agent
	sctx, cancel := step(ctx)
	defer cancel()
	_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
	require.NoError(t, err)
	const vid, pid = 0x1d50, 0x6018
	d := startDaemon(t, ctx, m, "--drivers", "usbstorage,sg",
		"--personality", fmt.Sprintf("name=gadget,driver=usbstorage,vid=%04x,pid=%04x", vid, pid))
	d.waitTree(ctx, "the QEMU stick under usbstorage", func(doc *inspectDoc) bool {
		_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		return u != nil
	})

	for round := 1; round <= 2; round++ {
		timed(t, fmt.Sprintf("6-gadget-round%d", round), func(t *testing.T) {
			d.t = t
			// A step's budget per round: the one taken before the daemon
			// started ran out under load (the daemon's start alone took
			// 14 s on a loaded host).
			sctx, cancel := step(ctx)
			defer cancel()
			serial := fmt.Sprintf("GADGET%d", round)
			var res agentproto.GadgetResult
			require.NoError(t, a.Call(sctx, agentproto.OpGadgetUp, agentproto.GadgetArgs{
				Name: "g1", VID: vid, PID: pid, Product: "drvkit gadget", Serial: serial}, &res))
			// Matching attaches every candidate, starts the winner and then
			// terminates the losers: usbstorage's class-match instance may
			// briefly stand beside the gadget's, so wait until it is gone.
			doc := d.waitTree(ctx, "USBDevice 1d50:6018 → USBInterface → gadget, and no usbstorage instance beside it", func(doc *inspectDoc) bool {
				_, iface, g := usbStick(doc, "1d50", "6018", "gadget")
				return g != nil && len(doc.find(func(s *svcEntry) bool {
					return s.Driver == "usbstorage" && len(s.Providers) == 1 && s.Providers[0] == iface.ID
				})) == 0
			})
			dev, iface, inst := usbStick(doc, "1d50", "6018", "gadget")
			require.Equal(t, "USBMassStorage", inst.Class, "the personality runs usbstorage's driver")
			require.Equal(t, serial, dev.prop("serial"))

			lines := d.app(ctx, "-driver", "gadget", "-write", "3", "-pattern", serial, "-read", "3")
			require.Equal(t, inst.ID, findLine(lines, "opened").Service)
			require.Equal(t, serial, findLine(lines, "read").Data)
			q := findLine(lines, "inquiry")
			require.Equal(t, uint64(4<<20/512), q.Blocks, "the gadget's 4 MiB backing file")
			t.Logf("gadget INQUIRY through the personality: %q %q %q", q.Vendor, q.Product, q.Revision)

			require.NoError(t, a.Call(sctx, agentproto.OpGadgetOff, agentproto.GadgetArgs{Name: "g1"}, nil))
			d.waitTree(ctx, "the gadget's services freed", func(doc *inspectDoc) bool {
				return doc.byID(dev.ID) == nil && doc.byID(iface.ID) == nil && doc.byID(inst.ID) == nil
			})
			evs := d.checkTrace(ctx)
			for _, id := range []uint64{inst.ID, iface.ID, dev.ID} {
				requireTeardown(t, evs, id)
			}
			d.checkNoLeaks(ctx)
		})
	}
	d.t = t
	d.stop(ctx)
}

// TestDrvctlUnplugReadSoak repeats scenario 2's unplug during reads
// DRVKIT_E2E_SOAK times (skipped when unset): in every round a read must
// fail with ErrNoDevice, and no read with anything but that or
// ErrTerminated.
func TestDrvctlUnplugReadSoak(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("DRVKIT_E2E_SOAK"))
	if rounds <= 0 {
		t.Skip("set DRVKIT_E2E_SOAK=N to repeat the unplug-during-read N times (DRVKIT_E2E_SOAK_DEPTH: reads outstanding, default readDepth)")
	}
	depth := readDepth
	if v, err := strconv.Atoi(os.Getenv("DRVKIT_E2E_SOAK_DEPTH")); err == nil && v > 0 {
		depth = v
	}
	ctx, m := scenario(t, Config{})
	ctx, cancel := context.WithTimeout(ctx, time.Duration(rounds)*15*time.Second)
	defer cancel()
	d := startDaemon(t, ctx, m, "--drivers", "usbstorage")
	d.waitTree(ctx, "usbstorage", func(doc *inspectDoc) bool {
		_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		return u != nil
	})
	noDevice := 0
	for i := range rounds {
		status := fmt.Sprintf("/tmp/soak%d.status", i)
		_, err := m.Agent.Start(ctx, "reader", "e2e-app", "-socket", drvSock, "-driver", "usbstorage",
			"-read-loop", "8", "-depth", strconv.Itoa(depth), "-blocks", strconv.Itoa(readBlocks), "-status", status)
		require.NoError(t, err)
		d.waitApp(ctx, status, "reading")
		require.NoError(t, m.UnplugUSB(ctx))
		r, err := m.Agent.Wait(ctx, "reader")
		require.NoError(t, err)
		if _, n := readErrors(t, parseAppLines(t, r.Stdout), depth); n > 0 {
			noDevice++
		} else {
			t.Logf("round %d: no read failed with ErrNoDevice:\n%s", i, r.Stdout)
		}
		_, err = m.PlugUSB(ctx, "")
		require.NoError(t, err)
		d.waitTree(ctx, "usbstorage after replug", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			return u != nil
		})
	}
	t.Logf("depth %d: in %d of %d rounds a read failed with ErrNoDevice", depth, noDevice, rounds)
	d.checkTrace(ctx)
	d.checkNoLeaks(ctx)
	d.stop(ctx)
	require.Equal(t, rounds, noDevice)
}

func parseLifecycle(t *testing.T, out string) []driver.LifecycleEvent {
	t.Helper()
	evs, err := lifecycletest.ReadMonitorJSON(strings.NewReader(out))
	require.NoError(t, err)
	return evs
}
