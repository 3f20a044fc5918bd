//go:build e2e && linux

package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"github.com/stretchr/testify/require"
)

var assets *Assets

// timings collects per-scenario figures for the summary TestMain prints.
var timings struct {
	sync.Mutex
	lines []string
}

func record(format string, args ...any) {
	timings.Lock()
	defer timings.Unlock()
	timings.lines = append(timings.lines, fmt.Sprintf(format, args...))
}

func TestMain(m *testing.M) {
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	bins, err := buildGuestBins(ctx)
	if err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	a, err := Prepare(ctx, os.Stdout, bins...)
	cancel()
	os.RemoveAll(filepath.Dir(bins[0]))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	assets = a
	fmt.Printf("e2e: %s, prepared in %v\n", a.KernelPackage, a.PrepareTime.Round(time.Millisecond))
	code := m.Run()
	timings.Lock()
	summary := "e2e timings:\n  prepare " + a.PrepareTime.Round(time.Millisecond).String() + "\n  " + strings.Join(timings.lines, "\n  ") + "\n"
	timings.Unlock()
	fmt.Print(summary)
	os.WriteFile(CacheDir()+"/logs/timings.txt", []byte(summary), 0o644)
	os.Exit(code)
}

// scenario boots a machine for t and returns a context bounding the whole
// scenario; it records boot and scenario durations.
func scenario(t *testing.T, cfg Config) (context.Context, *Machine) {
	t.Helper()
	return scenarioWithin(t, cfg, 2*time.Minute)
}

// scenarioWithin is scenario for one that takes longer than most.
func scenarioWithin(t *testing.T, cfg Config, d time.Duration) (context.Context, *Machine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	cfg.Assets = assets
	t0 := time.Now()
	m := StartForTest(t, ctx, cfg)
	t.Cleanup(func() {
		total := time.Since(t0)
		m.Close() // idempotent; reads QEMU's peak memory first
		record("%-22s boot %7v  scenario %7v  total %7v  qemu-peak %3d MiB  %s", t.Name(),
			m.BootTime.Round(time.Millisecond), (total - m.BootTime).Round(time.Millisecond), total.Round(time.Millisecond),
			m.PeakRSS>>20, map[bool]string{false: "PASS", true: "FAIL"}[t.Failed()])
	})
	return ctx, m
}

// step bounds one wait of a scenario.
func step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 20*time.Second)
}

func findUSB(devs []agentproto.USBDevice, vid, pid string) *agentproto.USBDevice {
	for i := range devs {
		if devs[i].VID == vid && devs[i].PID == pid {
			return &devs[i]
		}
	}
	return nil
}

// usbProduct is the PRODUCT value of a USB device's uevents: vid/pid/bcd in
// hex without leading zeros.
func usbProduct(vid, pid uint16) string { return fmt.Sprintf("%x/%x/*", vid, pid) }

// Coldplug: the agent's uevent socket, opened before any module was loaded,
// saw the stick and the disk appear; gousb enumerates the stick; every sg
// node answers INQUIRY through SG_IO; and driver/scsi's own TestSGReal
// passes on both sg nodes, writes included.
func TestColdplug(t *testing.T) {
	ctx, m := scenario(t, Config{USBSerial: "COLD123"})
	a := m.Agent

	sctx, cancel := step(ctx)
	defer cancel()
	u, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "usb",
		Env: map[string]string{"DEVTYPE": "usb_device", "PRODUCT": usbProduct(0x46f4, 0x0001)}})
	require.NoError(t, err)
	require.Zero(t, u.SenderPID, "a kernel uevent comes from netlink port 0")
	_, err = a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_device", Devpath: "/virtio"})
	require.NoError(t, err)
	// SCSI scanning is asynchronous: list only once both sg nodes exist.
	for _, bus := range []string{"/usb", "/virtio"} {
		_, err = a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: bus})
		require.NoError(t, err)
	}

	var devs []agentproto.USBDevice
	require.NoError(t, a.Call(sctx, agentproto.OpUSBList, nil, &devs))
	stick := findUSB(devs, USBVendor, USBProduct)
	require.NotNil(t, stick, "gousb did not enumerate 46f4:0001: %+v", devs)
	require.Equal(t, "QEMU", stick.Manufacturer)
	require.Equal(t, "QEMU USB HARDDRIVE", stick.Product)
	require.Equal(t, "COLD123", stick.Serial)
	require.Empty(t, stick.OpenError)

	var sgs []agentproto.SGDevice
	require.NoError(t, a.Call(sctx, agentproto.OpSGList, nil, &sgs))
	require.Len(t, sgs, 2, "one sg node for the virtio disk, one for the stick: %+v", sgs)
	var usbSeen, virtioSeen bool
	for _, sg := range sgs {
		var q agentproto.Inquiry
		require.NoError(t, a.Call(sctx, agentproto.OpInquiry, agentproto.InquiryArgs{Device: sg.Dev}, &q))
		require.Equal(t, "QEMU", q.Vendor, sg.Dev)
		require.Equal(t, "QEMU HARDDISK", q.Product, sg.Dev)
		require.Equal(t, 0, q.PeripheralType, "direct-access block device")
		require.Equal(t, sg.Vendor, q.Vendor, "SG_IO agrees with sysfs")
		usbSeen = usbSeen || sg.IsUSB()
		virtioSeen = virtioSeen || strings.Contains(sg.SysDev, "/virtio")
		t.Logf("%s %s: INQUIRY %q %q %q in %.1fms", sg.Dev, sg.HCTL, q.Vendor, q.Product, q.Revision, q.Ms)
	}
	require.True(t, usbSeen && virtioSeen, "%+v", sgs)

	// The console carries the agent's verdict lines too.
	_, err = m.Console.WaitLine(sctx, 0, regexp.MustCompile(`^E2E sg\.inquiry PASS .*vendor="QEMU"`))
	require.NoError(t, err)

	timed(t, "TestSGReal", func(t *testing.T) { sgRealInGuest(t, ctx, a, sgs) })
}

// sgRealInGuest runs driver/scsi's TestSGReal (scsi.test, built by
// buildGuestBins) on the guest's real sg nodes, with both disks named as
// scratch: it must PASS on every node, writes included, and skip nothing.
func sgRealInGuest(t *testing.T, ctx context.Context, a *Agent, sgs []agentproto.SGDevice) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var nodes []string
	for _, sg := range sgs {
		nodes = append(nodes, sg.Dev)
		bus := "virtio-scsi scsi-hd"
		if sg.IsUSB() {
			bus = "usb-storage stick"
		}
		t.Logf("%s (%s): the %s", sg.Dev, sg.HCTL, bus)
	}
	r, err := a.Exec(ctx, "env", "DRVKIT_SG_SCRATCH="+strings.Join(nodes, ","),
		"scsi.test", "-test.run", "^TestSGReal$", "-test.v", "-test.count=1")
	require.NoError(t, err)
	out := r.Stdout + r.Stderr
	t.Logf("scsi.test -test.run ^TestSGReal$ in the guest (%.0f ms, exit %d):\n%s", r.Ms, r.Exit, out)
	require.Zero(t, r.Exit, "TestSGReal failed in the guest")
	require.NotContains(t, out, "--- SKIP", "TestSGReal must run, not skip, on the real kernel")
	require.NotContains(t, out, "SKIPPED")
	require.Regexp(t, `(?m)^--- PASS: TestSGReal \(`, out)
	require.Regexp(t, `(?m)^PASS$`, out)
	for _, n := range nodes {
		base := regexp.QuoteMeta(filepath.Base(n))
		require.Regexp(t, `(?m)^    --- PASS: TestSGReal/`+base+` \(`, out)
		require.Regexp(t, `sgreal: `+regexp.QuoteMeta(n)+` scratch LBAs \d+-\d+: WRITE\(10\)->READ\(16\), WRITE\(16\)->READ\(10\), .* verified in `, out)
		require.Regexp(t, regexp.QuoteMeta(n)+`: INQUIRY: type 0 vendor "QEMU" product "QEMU HARDDISK"`, out)
	}
}

// USB hot-unplug and replug through QMP: the guest sees the whole remove
// chain, then the device again, and gousb enumerates it with the new serial.
func TestUSBHotplug(t *testing.T) {
	ctx, m := scenario(t, Config{})
	a := m.Agent
	stick := Match{Subsystem: "usb", Env: map[string]string{"DEVTYPE": "usb_device", "PRODUCT": usbProduct(0x46f4, 0x0001)}}

	sctx, cancel := step(ctx)
	defer cancel()
	add := stick
	add.Action = "add"
	_, err := a.WaitUevent(sctx, 0, add)
	require.NoError(t, err)
	// The disk must be fully up before it is pulled, or the test would
	// race the probe rather than exercise a removal.
	_, err = a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "block", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "disk"}})
	require.NoError(t, err)

	for round := 1; round <= 2; round++ {
		mark := a.UeventMark()
		t0 := time.Now()
		require.NoError(t, m.UnplugUSB(sctx))
		del := time.Since(t0)
		rm := stick
		rm.Action = "remove"
		_, err = a.WaitUevent(sctx, mark, rm)
		require.NoError(t, err)
		for _, sub := range []string{"scsi_generic", "block", "scsi_device", "usb"} {
			require.NotEmpty(t, a.Uevents(mark, Match{Action: "remove", Subsystem: sub, Devpath: "/usb"}),
				"no remove uevent for %s", sub)
		}
		var devs []agentproto.USBDevice
		require.NoError(t, a.Call(sctx, agentproto.OpUSBList, nil, &devs))
		require.Nil(t, findUSB(devs, USBVendor, USBProduct), "the stick is still enumerated after unplug")
		gone := time.Since(t0)

		serial := fmt.Sprintf("REPLUG%d", round)
		mark = a.UeventMark()
		t1 := time.Now()
		attempts, err := m.PlugUSB(sctx, serial)
		require.NoError(t, err)
		_, err = a.WaitUevent(sctx, mark, add)
		require.NoError(t, err)
		_, err = a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
		require.NoError(t, err)
		back := time.Since(t1)
		require.NoError(t, a.Call(sctx, agentproto.OpUSBList, nil, &devs))
		d := findUSB(devs, USBVendor, USBProduct)
		require.NotNil(t, d, "the stick is not enumerated after replug: %+v", devs)
		require.Equal(t, serial, d.Serial)
		t.Logf("round %d: device_del %v, removed in guest %v; device_add (%d attempts) to sg add %v",
			round, del.Round(time.Millisecond), gone.Round(time.Millisecond), attempts, back.Round(time.Millisecond))
	}
}

// New devices appear at run time: a second stick on a node created with
// blockdev-add, and a new LUN on the SCSI target; both answer and both go.
func TestHotAddNewDevices(t *testing.T) {
	ctx, m := scenario(t, Config{})
	a := m.Agent
	sctx, cancel := step(ctx)
	defer cancel()
	_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
	require.NoError(t, err)

	mark := a.UeventMark()
	require.NoError(t, m.AddDisk(sctx, "stick2disk", 8))
	require.NoError(t, m.AddUSBStick(sctx, "stick2", "stick2disk", "SECOND"))
	require.NoError(t, m.AddDisk(sctx, "lun3disk", 8))
	require.NoError(t, m.AddSCSIDisk(sctx, "lun3", "lun3disk", 3))
	usbSG, err := a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
	require.NoError(t, err)
	lunSG, err := a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "scsi_generic", Devpath: ":0:0:3/"})
	require.NoError(t, err)

	var devs []agentproto.USBDevice
	require.NoError(t, a.Call(sctx, agentproto.OpUSBList, nil, &devs))
	var serials []string
	for _, d := range devs {
		if d.ID() == USBVendor+":"+USBProduct {
			serials = append(serials, d.Serial)
		}
	}
	require.ElementsMatch(t, []string{"DRVKIT-E2E-1", "SECOND"}, serials)
	for _, u := range []*agentproto.Uevent{usbSG, lunSG} {
		var q agentproto.Inquiry
		require.NoError(t, a.Call(sctx, agentproto.OpInquiry, agentproto.InquiryArgs{Device: "/dev/" + u.Get("DEVNAME")}, &q))
		require.Equal(t, "QEMU", q.Vendor)
	}

	mark = a.UeventMark()
	require.NoError(t, m.QMP.DeviceDel(sctx, "stick2"))
	require.NoError(t, m.QMP.DeviceDel(sctx, "lun3"))
	_, err = a.WaitUevent(sctx, mark, Match{Action: "remove", Subsystem: "scsi_generic", Devpath: ":0:0:3/"})
	require.NoError(t, err)
	_, err = a.WaitUevent(sctx, mark, Match{Action: "remove", Subsystem: "usb",
		Env: map[string]string{"DEVTYPE": "usb_device", "PRODUCT": usbProduct(0x46f4, 0x0001)}})
	require.NoError(t, err)
	// The first stick is untouched.
	require.NoError(t, a.Call(sctx, agentproto.OpUSBList, nil, &devs))
	d := findUSB(devs, USBVendor, USBProduct)
	require.NotNil(t, d)
	require.Equal(t, "DRVKIT-E2E-1", d.Serial)
}

// The user-space bulk-only driver (driver/scsi over driver/usb's gousb
// backend) on the real stick: the kernel's usb-storage is detached for it,
// INQUIRY returns the identity the kernel reports, a block written in user
// space is read back, and on close the kernel driver is re-attached and sees
// the data.
func TestUserSpaceBOT(t *testing.T) {
	ctx, m := scenario(t, Config{USBSerial: "BOTSTICK"})
	a := m.Agent
	sctx, cancel := step(ctx)
	defer cancel()
	_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
	require.NoError(t, err)
	var sgs []agentproto.SGDevice
	require.NoError(t, a.Call(sctx, agentproto.OpSGList, nil, &sgs))
	var kernel *agentproto.SGDevice
	for i := range sgs {
		if sgs[i].IsUSB() {
			kernel = &sgs[i]
		}
	}
	require.NotNil(t, kernel, "no sg node on USB: %+v", sgs)

	mark := a.UeventMark()
	var r agentproto.BOTResult
	require.NoError(t, a.Call(sctx, agentproto.OpBOT, agentproto.BOTArgs{
		Selector: "46f4:0001:BOTSTICK", WriteLBA: 8, Pattern: "drvkit-e2e"}, &r))
	t.Logf("BOT on %s: %+v", r.Device, r)
	require.Equal(t, []string{"usb-storage@0"}, r.Detached)
	require.Equal(t, kernel.Vendor, r.Inquiry.Vendor, "INQUIRY over BOT agrees with the kernel")
	require.Equal(t, kernel.Model, r.Inquiry.Product)
	require.Equal(t, 512, r.BlockSize)
	require.Equal(t, uint64(16<<20/512), r.Blocks)
	require.True(t, r.RoundTrip)
	require.Zero(t, r.StillDetached, "the kernel driver is re-attached on close")

	// The kernel let go of the interface, and took it back.
	iface := Match{Subsystem: "usb", Env: map[string]string{"DEVTYPE": "usb_interface", "PRODUCT": usbProduct(0x46f4, 0x0001)}}
	unbind, bind := iface, iface
	unbind.Action, bind.Action = "unbind", "bind"
	_, err = a.WaitUevent(sctx, mark, unbind)
	require.NoError(t, err)
	require.NotEmpty(t, a.Uevents(mark, Match{Action: "remove", Subsystem: "scsi_generic", Devpath: "/usb"}))
	_, err = a.WaitUevent(sctx, mark, bind)
	require.NoError(t, err)
	disk, err := a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "block", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "disk"}})
	require.NoError(t, err)
	out, err := a.Exec(sctx, "sh", "-c", "dd if=/dev/"+disk.Get("DEVNAME")+" bs=512 skip=8 count=1 2>/dev/null | head -c 10")
	require.NoError(t, err)
	require.Equal(t, "drvkit-e2e", out.Stdout, "the kernel reads what the user-space driver wrote: %s", out.Stderr)
}

// The stick is pulled while the user-space driver reads from it: the read
// fails with ErrNoDevice (not a hang, not a generic I/O error), and after the
// replug the kernel's usb-storage has the new device.
func TestUSBUnplugDuringBOTRead(t *testing.T) {
	ctx, m := scenario(t, Config{})
	a := m.Agent
	sctx, cancel := step(ctx)
	defer cancel()
	_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
	require.NoError(t, err)

	mark := a.EventMark()
	type botReply struct {
		r   agentproto.BOTResult
		err error
	}
	done := make(chan botReply, 1)
	go func() {
		var r agentproto.BOTResult
		err := a.Call(sctx, agentproto.OpBOT, agentproto.BOTArgs{Selector: "46f4:0001", WriteLBA: -1,
			ReadUntilError: true, TimeoutMs: 15000}, &r)
		done <- botReply{r, err}
	}()
	// Pull it only once reads are going through.
	_, err = a.WaitEvent(sctx, mark, agentproto.EventBOTReading)
	require.NoError(t, err)
	t0 := time.Now()
	require.NoError(t, m.UnplugUSB(sctx))
	var rep botReply
	select {
	case rep = <-done:
	case <-sctx.Done():
		t.Fatal("the read never failed after the unplug")
	}
	require.NoError(t, rep.err)
	t.Logf("%d reads, then after %v: %s", rep.r.Reads, time.Since(t0).Round(time.Millisecond), rep.r.ReadError)
	require.Positive(t, rep.r.Reads)
	require.True(t, rep.r.NoDevice, "the read error must match ErrNoDevice: %s", rep.r.ReadError)

	mark = a.UeventMark()
	_, err = m.PlugUSB(sctx, "AFTERPULL")
	require.NoError(t, err)
	_, err = a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
	require.NoError(t, err)
}

// SCSI hot-unplug and replug of the virtio-scsi disk.
func TestSCSIHotplug(t *testing.T) {
	ctx, m := scenario(t, Config{})
	a := m.Agent
	sctx, cancel := step(ctx)
	defer cancel()
	disk := Match{Subsystem: "scsi_device", Devpath: "/virtio"}
	add := disk
	add.Action = "add"
	_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/virtio"})
	require.NoError(t, err)

	mark := a.UeventMark()
	t0 := time.Now()
	require.NoError(t, m.UnplugSCSI(sctx))
	rm := disk
	rm.Action = "remove"
	_, err = a.WaitUevent(sctx, mark, rm)
	require.NoError(t, err)
	require.NotEmpty(t, a.Uevents(mark, Match{Action: "remove", Subsystem: "scsi_generic", Devpath: "/virtio"}))
	gone := time.Since(t0)
	var sgs []agentproto.SGDevice
	require.NoError(t, a.Call(sctx, agentproto.OpSGList, nil, &sgs))
	for _, sg := range sgs {
		require.NotContains(t, sg.SysDev, "/virtio", "the disk's sg node outlived the unplug")
	}

	mark = a.UeventMark()
	t1 := time.Now()
	attempts, err := m.PlugSCSI(sctx)
	require.NoError(t, err)
	_, err = a.WaitUevent(sctx, mark, add)
	require.NoError(t, err)
	sgAdd, err := a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/virtio"})
	require.NoError(t, err)
	back := time.Since(t1)
	dev := "/dev/" + sgAdd.Get("DEVNAME")
	var q agentproto.Inquiry
	require.NoError(t, a.Call(sctx, agentproto.OpInquiry, agentproto.InquiryArgs{Device: dev}, &q))
	require.Equal(t, "QEMU", q.Vendor)
	t.Logf("unplug %v, replug (%d attempts) %v, INQUIRY on %s after replug %.1fms",
		gone.Round(time.Millisecond), attempts, back.Round(time.Millisecond), dev, q.Ms)
}

// A dummy_hcd mass-storage gadget with a custom VID:PID, bound and unbound
// from inside the guest: a USB device that appears and vanishes without QMP.
func TestGadget(t *testing.T) {
	ctx, m := scenario(t, Config{})
	a := m.Agent
	sctx, cancel := step(ctx)
	defer cancel()
	const vid, pid = 0x1d50, 0x6018
	dev := Match{Subsystem: "usb", Env: map[string]string{"DEVTYPE": "usb_device", "PRODUCT": usbProduct(vid, pid)}}
	add, rm := dev, dev
	add.Action, rm.Action = "add", "remove"

	for round := 1; round <= 2; round++ {
		mark := a.UeventMark()
		var res agentproto.GadgetResult
		serial := fmt.Sprintf("GADGET%d", round)
		require.NoError(t, a.Call(sctx, agentproto.OpGadgetUp, agentproto.GadgetArgs{
			Name: "g1", VID: vid, PID: pid, Product: "drvkit gadget", Serial: serial}, &res))
		require.Equal(t, "dummy_udc.0", res.UDC)
		_, err := a.WaitUevent(sctx, mark, add)
		require.NoError(t, err)
		// usb-storage binds to it on the host side of dummy_hcd.
		_, err = a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "dummy_hcd"})
		require.NoError(t, err)
		var devs []agentproto.USBDevice
		require.NoError(t, a.Call(sctx, agentproto.OpUSBList, nil, &devs))
		g := findUSB(devs, "1d50", "6018")
		require.NotNil(t, g, "gousb does not see the gadget: %+v", devs)
		require.Equal(t, serial, g.Serial)
		require.Equal(t, "drvkit gadget", g.Product)

		mark = a.UeventMark()
		require.NoError(t, a.Call(sctx, agentproto.OpGadgetOff, agentproto.GadgetArgs{Name: "g1"}, nil))
		_, err = a.WaitUevent(sctx, mark, rm)
		require.NoError(t, err)
	}
}

// The batch path: requests on the kernel command line, verdicts matched on
// the serial console only — how a scenario runs without a host driving it.
func TestBootScript(t *testing.T) {
	ctx, m := scenario(t, Config{Script: []agentproto.Request{
		// Enumeration and SCSI scanning are asynchronous: wait for them
		// in the guest, as a script must.
		{Op: agentproto.OpUevent, Args: []byte(`{"match":{"action":"add","subsystem":"scsi_generic","devpath":"/usb"}}`)},
		{Op: agentproto.OpUevent, Args: []byte(`{"match":{"action":"add","subsystem":"scsi_generic","devpath":"/virtio"}}`)},
		{Op: agentproto.OpUSBList},
		{Op: agentproto.OpInquiry, Args: []byte(`{"device":"/dev/sg0"}`)},
		{Op: agentproto.OpExec, Args: []byte(`{"argv":["sh","-c","cat /sys/bus/usb/devices/*/idVendor"]}`)},
		{Op: agentproto.OpInquiry, Args: []byte(`{"device":"/dev/nonexistent"}`)},
	}})
	sctx, cancel := step(ctx)
	defer cancel()
	for _, re := range []string{
		`^E2E uevent\.wait PASS .*add@/devices/.*/usb.*\(scsi_generic\)`,
		`^E2E usb\.list PASS .*46f4:0001`,
		`^E2E sg\.inquiry PASS .*vendor="QEMU" product="QEMU HARDDISK"`,
		`^E2E exec PASS .*exit=0`,
		`^E2E sg\.inquiry FAIL .*not an sg node`,
		`^E2E script DONE$`,
	} {
		_, err := m.Console.WaitLine(sctx, 0, regexp.MustCompile(re))
		require.NoError(t, err)
	}
	// The agent's exec is the remote shell later scenarios run drvctl with.
	r, err := m.Agent.Exec(sctx, "sh", "-c", "echo out; echo err >&2; exit 3")
	require.NoError(t, err)
	require.Equal(t, 3, r.Exit)
	require.Equal(t, "out\n", r.Stdout)
	require.Equal(t, "err\n", r.Stderr)
	pid, err := m.Agent.Start(sctx, "sleeper", "sleep", "60")
	require.NoError(t, err)
	require.NotZero(t, pid)
	require.NoError(t, m.Agent.Signal(sctx, "sleeper", syscall.SIGKILL))
	r, err = m.Agent.Wait(sctx, "sleeper")
	require.NoError(t, err)
	require.Equal(t, "killed", r.Signal)

	require.NoError(t, m.Poweroff(sctx))
}
