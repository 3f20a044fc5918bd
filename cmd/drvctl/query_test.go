package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// One test per inspect filter, on the scripted registry (a stick matched by
// usbstorage and opened by a user client, and a SCSI disk): which services
// each query selects, and the trees in one golden file.
func TestInspectQueries(t *testing.T) {
	leaktest.Check(t)
	r := scriptedRegistry(t)
	dev := findClass(t, r, "USBDevice")
	tests := []struct {
		name string
		args string // as typed, for the golden file
		q    inspectQuery
		want []string // labels selected
	}{
		{"everything", "", inspectQuery{},
			[]string{"Root@root", "USBDevice@1-1", "USBInterface@1-1:1.0", "USBMassStorage@usbstorage", "UserClient@pid4242", "SCSIDevice@2:0:0:0"}},
		{"target by ID", fmt.Sprint(dev.ID()), inspectQuery{Target: fmt.Sprint(dev.ID())},
			[]string{"USBDevice@1-1", "USBInterface@1-1:1.0", "USBMassStorage@usbstorage", "UserClient@pid4242"}},
		{"target by label", "USBInterface@1-1:1.0", inspectQuery{Target: "USBInterface@1-1:1.0"},
			[]string{"USBInterface@1-1:1.0", "USBMassStorage@usbstorage", "UserClient@pid4242"}},
		{"target by name", "usbstorage", inspectQuery{Target: "usbstorage"},
			[]string{"USBMassStorage@usbstorage", "UserClient@pid4242"}},
		{"target by devpath", "/sys/devices/virtual/disk0", inspectQuery{Target: "/sys/devices/virtual/disk0"},
			[]string{"SCSIDevice@2:0:0:0"}},
		{"class glob", "-c 'USB*'", inspectQuery{Class: "USB*"},
			[]string{"USBDevice@1-1", "USBInterface@1-1:1.0", "USBMassStorage@usbstorage", "UserClient@pid4242"}},
		{"class exact", "-c USBMassStorage", inspectQuery{Class: "USBMassStorage"},
			[]string{"USBMassStorage@usbstorage", "UserClient@pid4242"}},
		{"name", "-n 2:0:0:0", inspectQuery{Name: "2:0:0:0"}, []string{"SCSIDevice@2:0:0:0"}},
		{"depth from the roots", "-d 2", inspectQuery{Depth: 2}, []string{"Root@root", "USBDevice@1-1", "SCSIDevice@2:0:0:0"}},
		{"depth of a match", "-c USBDevice -d 2", inspectQuery{Class: "USBDevice", Depth: 2},
			[]string{"USBDevice@1-1", "USBInterface@1-1:1.0"}},
		{"depth 1 is the match alone", "-c USBDevice -d 1", inspectQuery{Class: "USBDevice", Depth: 1}, []string{"USBDevice@1-1"}},
		{"parents", "-p -c UserClient", inspectQuery{Class: "UserClient", Parents: true},
			[]string{"Root@root", "USBDevice@1-1", "USBInterface@1-1:1.0", "USBMassStorage@usbstorage", "UserClient@pid4242"}},
		{"property number, hex", "--property idVendor=0x46f4 -d 1", inspectQuery{Properties: []propMatch{{"idVendor", "0x46f4"}}, Depth: 1},
			[]string{"USBDevice@1-1"}},
		{"property number, decimal", "--property idVendor=18164 -d 1", inspectQuery{Properties: []propMatch{{"idVendor", "18164"}}, Depth: 1},
			[]string{"USBDevice@1-1"}},
		{"property text glob", "--property 'model=QEMU*'", inspectQuery{Properties: []propMatch{{"model", "QEMU*"}}},
			[]string{"SCSIDevice@2:0:0:0"}},
		{"property flag", "--property removable=false", inspectQuery{Properties: []propMatch{{"removable", "false"}}},
			[]string{"SCSIDevice@2:0:0:0"}},
		{"properties all match", "--property type=0 --property vendor=ACME", inspectQuery{Properties: []propMatch{{"type", "0"}, {"vendor", "ACME"}}}, nil},
		{"driver instance property", "--property provider_class=USBInterface", inspectQuery{Properties: []propMatch{{"provider_class", "USBInterface"}}},
			[]string{"USBMassStorage@usbstorage", "UserClient@pid4242"}},
		{"nothing", "-c NoSuchClass", inspectQuery{Class: "NoSuchClass"}, nil},
	}
	ids := map[uint64]uint64{}
	for i, s := range sortedServices(r) {
		ids[s.ID()] = uint64(i + 1)
	}
	var all bytes.Buffer
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel := tt.q.selectServices(sortedServices(r))
			doc := inspectDoc{SchemaVersion: inspectSchemaVersion}
			var got []string
			for _, s := range sel {
				e := entryOf(s)
				doc.Services = append(doc.Services, e)
				got = append(got, e.label())
			}
			require.ElementsMatch(t, tt.want, got)
			renumberWith(&doc, ids)
			fmt.Fprintf(&all, "$ drvctl inspect %s\n", strings.ReplaceAll(tt.args, fmt.Sprint(dev.ID()), "2"))
			require.NoError(t, writeTree(&all, &doc, false))
			all.WriteString("\n")
		})
	}
	golden(t, "inspect-queries.txt", all.Bytes())
}

func TestPropMatch(t *testing.T) {
	for _, tt := range []struct {
		value string
		prop  any
		want  bool
	}{
		{"0x0781", uint64(0x781), true}, {"1921", uint64(0x781), true}, {"0781", uint64(0x781), false}, // 0781 is decimal 781
		{"781", int64(781), true}, {"0X0781", float64(0x781), true}, {"x", uint64(1), false},
		{"QEMU*", "QEMU HARDDISK", true}, {"qemu*", "QEMU HARDDISK", false}, {"[", "[", true},
		{"true", true, true}, {"1", true, true}, {"no", false, false},
	} {
		require.Equal(t, tt.want, propMatch{"k", tt.value}.matchValue(tt.prop), "%q vs %#v", tt.value, tt.prop)
	}
	_, err := parsePropMatch("novalue")
	require.ErrorContains(t, err, "want KEY=VALUE")
	_, err = parsePropMatch("=x")
	require.Error(t, err)
	m, err := parsePropMatch("a=b=c")
	require.NoError(t, err)
	require.Equal(t, propMatch{"a", "b=c"}, m)
}

// One test per monitor filter: which of a mixed stream of events pass.
func TestMonitorFilters(t *testing.T) {
	events := []monitorEvent{
		{Kind: "kernel", Seq: 1, Action: "add", Subsystem: "usb", Devpath: "/devices/usb2/2-1", Env: map[string]string{"PRODUCT": "781/5567/100", "DEVTYPE": "usb_device"}},
		{Kind: "kernel", Seq: 2, Action: "add", Subsystem: "scsi", Devpath: "/devices/host0/0:0:0:0", Env: map[string]string{"DEVTYPE": "scsi_device"}},
		{Kind: "lifecycle", Seq: 3, Step: "publish", Class: "USBDevice", Name: "2-1"},
		{Kind: "lifecycle", Seq: 4, Step: "start", Class: "USBMassStorage", Name: "usbstorage"},
		{Kind: "lifecycle", Seq: 5, Step: "publish", Class: "SCSIDevice", Name: "0:0:0:0"},
		{Kind: "warning", Seq: 6, Detail: "the kernel dropped uevents"},
	}
	for _, tt := range []struct {
		name string
		f    monitorFilter
		want []uint64
	}{
		{"none", monitorFilter{}, []uint64{1, 2, 3, 4, 5, 6}},
		{"kind kernel", monitorFilter{Kinds: []string{"kernel"}}, []uint64{1, 2, 6}},
		{"kind lifecycle", monitorFilter{Kinds: []string{"lifecycle"}}, []uint64{3, 4, 5, 6}},
		{"subsystem", monitorFilter{Subsystems: []string{"usb"}}, []uint64{1, 6}},
		{"subsystem glob", monitorFilter{Subsystems: []string{"s*"}}, []uint64{2, 6}},
		{"subsystem with both kinds", monitorFilter{Subsystems: []string{"usb"}, Kinds: []string{"kernel", "lifecycle"}}, []uint64{1, 3, 4, 5, 6}},
		{"class", monitorFilter{Classes: []string{"USB*"}}, []uint64{3, 4, 6}},
		{"class and subsystem", monitorFilter{Classes: []string{"SCSIDevice"}, Subsystems: []string{"scsi"}}, []uint64{2, 5, 6}},
		{"property", monitorFilter{Properties: []propMatch{{"DEVTYPE", "usb_*"}}}, []uint64{1, 6}},
		{"property absent", monitorFilter{Properties: []propMatch{{"NOPE", "*"}}}, []uint64{6}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, tt.f.check())
			var got []uint64
			for i := range events {
				if tt.f.match(&events[i]) {
					got = append(got, events[i].Seq)
				}
			}
			require.Equal(t, tt.want, got)
		})
	}
	require.ErrorContains(t, (&monitorFilter{Kinds: []string{"udev"}}).check(), `unknown event kind "udev"`)
}

// The monitor's time never goes back as its sequence goes forward, however
// the kernel and lifecycle events interleave.
func TestMonitorTimesInOrder(t *testing.T) {
	h := newMonitorHub()
	var got []monitorEvent
	cancel := h.subscribe(func(e monitorEvent) { got = append(got, e) })
	defer cancel()
	for _, at := range []monoTime{100, 300, 200, 250, 400} {
		h.publish(monitorEvent{Kind: "lifecycle", Time: at})
	}
	times := make([]monoTime, len(got))
	for i, e := range got {
		times[i] = e.Time
	}
	require.True(t, sort.SliceIsSorted(times, func(i, j int) bool { return times[i] < times[j] }), "%v", times)
	require.Equal(t, []monoTime{100, 300, 300, 300, 400}, times)
}

// drvctl monitor's filters end to end: the daemon filters the replay and
// the live stream (set by the session's filter call), so only matching
// lines arrive.
func TestMonitorFilteredByDaemon(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\nplug usb 2-1 vid=0781 pid=5567 ifaces=ff/00/00\n"), 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "error",
		trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	f := monitorFilter{Classes: []string{"SCSI*"}}
	go func() { done <- monitor(ctx, sock, monitorOptions{asJSON: true, replay: true, filter: f}, &out) }()
	require.Eventually(t, func() bool { return bytes.Contains(out.Bytes(), []byte(`"class":"SCSIDevice"`)) },
		10*time.Second, 10*time.Millisecond, "the replay has the disk's publish")
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	require.NoError(t, d.inject(wctx, "scsi add 0:0:1:0\nunplug 2-1\n"))
	require.Eventually(t, func() bool { return bytes.Contains(out.Bytes(), []byte(`"name":"0:0:1:0"`)) },
		10*time.Second, 10*time.Millisecond, "the live stream has the new disk")
	cancel()
	require.NoError(t, <-done)
	lines := strings.Split(strings.TrimSpace(string(out.Bytes())), "\n")
	require.NotEmpty(t, lines)
	for _, l := range lines {
		var e monitorEvent
		require.NoError(t, json.Unmarshal([]byte(l), &e), l)
		require.Equal(t, "lifecycle", e.Kind, l)
		require.True(t, strings.HasPrefix(e.Class, "SCSI"), l)
	}
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
}
