package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

type nopDriver struct{}

func (nopDriver) Start(context.Context, *driver.Service) error { return nil }
func (nopDriver) Stop(*driver.Service)                         {}

// scriptedRegistry builds the registry the golden files show: a USB stick
// whose mass-storage interface is matched and opened by a user client, and
// an unmatched SCSI disk.
func scriptedRegistry(t *testing.T) *driver.Registry {
	t.Helper()
	return scriptedRegistryWith(t, nil)
}

// scriptedRegistryWith is scriptedRegistry with a lifecycle subscriber
// attached before anything happens.
func scriptedRegistryWith(t *testing.T, lifecycle func(driver.LifecycleEvent)) *driver.Registry {
	t.Helper()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if lifecycle != nil {
		t.Cleanup(r.SubscribeLifecycle(lifecycle))
	}
	rec := lifecycletest.Record(t, r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
		rec.Check(t)
	})
	require.NoError(t, r.RegisterPersonality(driver.Personality{
		Name: "usbstorage", Class: "USBMassStorage", ProviderClass: "USBInterface",
		Match: []driver.Match{driver.MatchValue("bInterfaceClass", 8), driver.MatchValue("bInterfaceProtocol", 0x50)},
		New:   func() driver.Driver { return nopDriver{} },
	}))
	dev := r.NewNub("USBDevice", "1-1", driver.NewProperties(map[string]any{
		"idVendor": 0x46f4, "idProduct": 0x0001, "serial": "PROBE123", "busnum": 1, "devnum": 2}))
	require.NoError(t, r.Publish(nil, dev))
	ifc := r.NewNub("USBInterface", "1-1:1.0", driver.NewProperties(map[string]any{
		"bInterfaceClass": 8, "bInterfaceSubClass": 6, "bInterfaceProtocol": 0x50}))
	require.NoError(t, r.Publish(dev, ifc))
	require.Len(t, ifc.Clients(), 1, "usbstorage should have matched the interface")
	drv := ifc.Clients()[0]
	uc, err := r.AttachClientWithProperties(drv, "UserClient", "pid4242", driver.NewProperties(map[string]any{
		"pid": 4242, "uid": 1000, "gid": 1000, "comm": "scsiapp"}), nil)
	require.NoError(t, err)
	require.NoError(t, drv.Open(uc, driver.OpenOptions{}))
	disk := r.NewNub("SCSIDevice", "2:0:0:0", driver.NewProperties(map[string]any{
		"vendor": "QEMU", "model": "QEMU HARDDISK", "type": 0, "removable": false, "devpath": "/devices/virtual/disk0"}))
	require.NoError(t, r.Publish(nil, disk))
	return r
}

// renumber replaces process-wide IDs with 1, 2, … in creation order, so the
// golden files do not depend on which tests ran before.
func renumber(d *inspectDoc) {
	m := map[uint64]uint64{}
	for i := range d.Services {
		m[d.Services[i].ID] = uint64(i + 1)
	}
	renumberWith(d, m)
}

// renumberWith renumbers by m (IDs it does not know become 0).
func renumberWith(d *inspectDoc, m map[uint64]uint64) {
	re := func(ids []uint64) {
		for i, id := range ids {
			ids[i] = m[id]
		}
	}
	for i := range d.Services {
		s := &d.Services[i]
		s.ID = m[s.ID]
		re(s.Providers)
		re(s.Clients)
		re(s.OpenBy)
	}
}

func TestInspectScriptedRegistry(t *testing.T) {
	leaktest.Check(t)
	r := scriptedRegistry(t)
	doc := inspectRegistry(r)
	renumber(&doc)

	// The CLI gets the document as JSON from the daemon: render what it gets.
	var wire bytes.Buffer
	require.NoError(t, writeJSON(&wire, &doc, false))
	golden(t, "registry-inspect.json", wire.Bytes())
	var got inspectDoc
	require.NoError(t, json.Unmarshal(wire.Bytes(), &got))

	for name, long := range map[string]bool{"registry-inspect.txt": false, "registry-inspect-l.txt": true} {
		var b bytes.Buffer
		require.NoError(t, writeTree(&b, &got, long))
		golden(t, name, b.Bytes())
	}
	var dot bytes.Buffer
	require.NoError(t, writeDOT(&dot, &got))
	golden(t, "registry-inspect.dot", dot.Bytes())
}

// The streamed reply is byte for byte the compact encoding of the whole
// document (drvctl inspect -o json prints it as it comes), and its indented
// form is what the CLI printed when it decoded and encoded it again.
func TestInspectStreamIsTheDocument(t *testing.T) {
	leaktest.Check(t)
	r := scriptedRegistry(t)
	var streamed bytes.Buffer
	require.NoError(t, inspectStream{services: sortedServices(r), v: viewer{admin: true}}.WriteJSON(&streamed))
	whole, err := json.Marshal(inspectRegistry(r))
	require.NoError(t, err)
	require.Equal(t, string(whole), streamed.String())

	doc := inspectRegistry(r)
	for _, pretty := range []bool{false, true} {
		var decoded, raw bytes.Buffer
		require.NoError(t, writeJSON(&decoded, &doc, pretty))
		require.NoError(t, writeRawJSON(&raw, streamed.Bytes(), pretty))
		require.Equal(t, decoded.String(), raw.String(), "pretty=%v", pretty)
	}
}
