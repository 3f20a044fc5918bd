package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "golden file missing: run go test -update")
	require.Equal(t, string(want), string(got), "output differs from %s (go test -update rewrites it)", path)
}

func loadFixture(t *testing.T) *inspectDoc {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "registry.json"))
	require.NoError(t, err)
	var d inspectDoc
	require.NoError(t, json.Unmarshal(raw, &d))
	return &d
}

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		golden string
		render func(*bytes.Buffer, *inspectDoc) error
	}{
		{"inspect.txt", func(b *bytes.Buffer, d *inspectDoc) error { return writeTree(b, d, false) }},
		{"inspect-l.txt", func(b *bytes.Buffer, d *inspectDoc) error { return writeTree(b, d, true) }},
		{"inspect.json", func(b *bytes.Buffer, d *inspectDoc) error { return writeJSON(b, d, true) }},
		{"inspect.dot", func(b *bytes.Buffer, d *inspectDoc) error { return writeDOT(b, d) }},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			var b bytes.Buffer
			require.NoError(t, tt.render(&b, loadFixture(t)))
			golden(t, tt.golden, b.Bytes())
		})
	}
}

// TestJSONTypesStable: a document with nothing in it leaves empty fields
// out; the fields it has keep the JSON type of a full one, and the service
// list is [] even when empty.
func TestJSONTypesStable(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeJSON(&b, &inspectDoc{SchemaVersion: inspectSchemaVersion, Services: []serviceEntry{{ID: 1}}}, false))
	require.Equal(t, `{"schema_version":2,"services":[{"id":1,"class":"","registered":false,"matched":false,"active":false,"busy":0,"retain":0}]}`+"\n", b.String())
	b.Reset()
	require.NoError(t, writeJSON(&b, &inspectDoc{SchemaVersion: inspectSchemaVersion}, false))
	require.Equal(t, `{"schema_version":2,"services":[]}`+"\n", b.String())

	b.Reset()
	require.NoError(t, writeJSON(&b, loadFixture(t), false))
	require.Equal(t, 1, strings.Count(b.String(), "\n"), "compact: one line")
	var v struct {
		Services []map[string]any `json:"services"`
	}
	require.NoError(t, json.Unmarshal(b.Bytes(), &v))
	for _, s := range v.Services {
		for _, k := range []string{"providers", "clients", "open_by"} {
			if x, ok := s[k]; ok {
				require.IsType(t, []any{}, x, k)
				require.NotEmpty(t, x, k)
			}
		}
		if x, ok := s["properties"]; ok {
			require.IsType(t, map[string]any{}, x)
		}
		if x, ok := s["driver"]; ok {
			require.IsType(t, "", x)
			require.NotEmpty(t, x)
		}
	}
}

func TestDOTParsesWithGraphviz(t *testing.T) {
	dot, err := exec.LookPath("dot")
	if err != nil {
		t.Skip("graphviz not installed (make deps installs it)")
	}
	var b bytes.Buffer
	require.NoError(t, writeDOT(&b, loadFixture(t)))
	cmd := exec.Command(dot, "-Tsvg")
	cmd.Stdin = &b
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "dot rejected our output: %s", out)
	require.Contains(t, string(out), "<svg")
}

func TestMonitorLines(t *testing.T) {
	events := []monitorEvent{
		{Kind: "kernel", Time: 1234567890, Action: "remove", Devpath: "/devices/pci0000:00/0000:00:04.0/usb2/2-1", Subsystem: "usb",
			Env: map[string]string{"ACTION": "remove", "SUBSYSTEM": "usb", "PRODUCT": "46f4/1/0", "SEQNUM": "2061"}},
		{Kind: "lifecycle", Time: 1234567895, Step: "terminate", ServiceID: 12, Class: "USBInterface", Name: "2-1:1.0", Cause: "unplug", RootCause: "unplug"},
		{Kind: "lifecycle", Time: 1234567896, Step: "terminate", ServiceID: 14, Class: "USBMassStorage", Name: "usbstorage", Cause: "provider", RootCause: "unplug"},
		{Kind: "lifecycle", Time: 1234567901, Step: "stop", ServiceID: 12, Class: "USBInterface", Name: "2-1:1.0"},
		{Kind: "lifecycle", Time: 1234568000, Step: "free", ServiceID: 13, Class: "UserClient", Detail: "pid 4242"},
	}
	var plain, env bytes.Buffer
	for i := range events {
		require.NoError(t, writeMonitorLine(&plain, &events[i], false))
		require.NoError(t, writeMonitorLine(&env, &events[i], true))
	}
	golden(t, "monitor.txt", plain.Bytes())
	golden(t, "monitor-env.txt", env.Bytes())
}

func TestStateText(t *testing.T) {
	for _, tc := range []struct {
		e    serviceEntry
		want string
	}{
		{serviceEntry{Class: "USBMassStorage", ID: 4, Driver: "usbstorage", Registered: true, Matched: true, Active: true, Retain: 3},
			"class USBMassStorage, id 4, driver usbstorage, registered, matched, active, busy 0, retain 3"},
		{serviceEntry{Class: "USBMassStorage", ID: 4, Driver: "usbstorage", Registered: true, Active: true, Starting: true, Busy: 1, Retain: 3},
			"class USBMassStorage, id 4, driver usbstorage, registered, !matched, active, starting, busy 1, retain 3"},
		{serviceEntry{Class: "SCSIDevice", ID: 6, Registered: true, Starting: true, Retain: 1, OpenBy: []uint64{7, 8}},
			"class SCSIDevice, id 6, registered, !matched, inactive, busy 0, retain 1, open by 7,8"},
	} {
		require.Equal(t, tc.want, tc.e.stateText())
	}
}

// Names from flags and devices reach the terminal escaped: a personality
// name carrying an escape sequence cannot rewrite the screen.
func TestNamesAreEscapedWhenPrinted(t *testing.T) {
	doc := &inspectDoc{Services: []serviceEntry{{ID: 1, Class: "USBInterface", Name: "2-1:1.0\x1b[2J", Driver: "evil\x1b]0;pwned\x07", Active: true, Registered: true}}}
	var b strings.Builder
	require.NoError(t, writeTree(&b, doc, false))
	require.NotContains(t, b.String(), "\x1b")
	require.Contains(t, b.String(), `USBInterface@"2-1:1.0\x1b[2J"`)
	require.Contains(t, b.String(), `driver "evil\x1b]0;pwned\a"`)
	require.Equal(t, "2-1:1.0", esc("2-1:1.0"))
	require.Equal(t, "größe", esc("größe"), "printable UTF-8 stays as it is")
	require.Equal(t, `"\xff"`, esc("\xff"))
	var m strings.Builder
	require.NoError(t, writeMonitorLine(&m, &monitorEvent{Kind: "kernel", Action: "add", Devpath: "/devices/x\x1b[31m", Subsystem: "usb",
		Env: map[string]string{"ID_MODEL": "a\x1bb"}}, true))
	require.NotContains(t, m.String(), "\x1b")
}
