package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

// writeBundle writes a bundle directory (manifest.toml and a harmless
// executable) or, with file, a bare manifest beside its executable.
func writeBundle(t *testing.T, dir, name, body string, file bool) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	manifest := filepath.Join(dir, name, "manifest.toml")
	exe := "drv"
	if file {
		manifest = filepath.Join(dir, name+".toml")
		exe = name + ".bin"
	} else {
		require.NoError(t, os.MkdirAll(filepath.Dir(manifest), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(manifest), exe), []byte("#!/bin/sh\nexit 0\n"), 0o755))
	text := "name = \"" + name + "\"\nversion = \"1.0\"\n[run]\nexecutable = \"" + exe + "\"\n" + body
	require.NoError(t, os.WriteFile(manifest, []byte(text), 0o644))
	return manifest
}

const stickPersonality = `user = "65534"
[[personality]]
provider_class = "USBInterface"
score = 1000
match.vid = 0x46f4
`

func driversJSON(t *testing.T, sock string) driversDoc {
	t.Helper()
	e, out, errb := testEnv(nil, 0)
	require.Equal(t, 0, run([]string{"drivers", "-o", "json", "--socket", sock}, e), errb.String())
	var doc driversDoc
	require.NoError(t, json.Unmarshal(out.Bytes(), &doc))
	require.Equal(t, 1, bytes.Count(out.Bytes(), []byte("\n")), "compact: one line")
	return doc
}

func rowOf(t *testing.T, doc driversDoc, name string) driverRow {
	t.Helper()
	for _, r := range doc.Drivers {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no driver %q in %+v", name, doc.Drivers)
	return driverRow{}
}

// TestBundlesOverDaemon: a daemon on the simulated bus loads the bundles
// of its drivers directory (a bad one is refused and listed, the others
// load), `drvctl load` adds one, `drivers` lists them with the built-ins,
// a bundle's personality wins matching but cannot start (the built-in
// driver takes the device), `unload` of a bundle removes it, an unload
// refused because an instance is held keeps the driver loaded and says so,
// and --force unloads it anyway. The lifecycle trace is valid and nothing
// leaks.
func TestBundlesOverDaemon(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	ddir := filepath.Join(dir, "drivers.d")
	writeBundle(t, ddir, "stick", stickPersonality, false)
	writeBundle(t, ddir, "rootly", `user = "0"
[[personality]]
provider_class = "HIDDevice"
match.usage_page = 1
`, true)
	later := writeBundle(t, filepath.Join(dir, "elsewhere"), "later", `user = "65534"
[[personality]]
provider_class = "SCSIDevice"
match.type = 5
`, false)
	bad := writeBundle(t, filepath.Join(dir, "elsewhere"), "typo", `user = "65534"
[[personality]]
provider_class = "USBInterface"
match.vendor = "x"
`, true)
	clash := writeBundle(t, filepath.Join(dir, "elsewhere"), "sg", stickPersonality, true)
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "usbstorage,sg", logFormat: "text", logLevel: "info",
		trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second,
		bundles: bundleOptions{dir: ddir}})
	require.Contains(t, d.log.String(), "driver bundle refused")
	require.Contains(t, d.log.String(), "rootly.toml:5: run.user: runs as root")

	cli := func(args ...string) (int, string, string) {
		e, out, errb := testEnv(nil, 0)
		code := run(append(args, "--socket", sock), e)
		return code, strings.ReplaceAll(out.String(), dir, "$DIR"), strings.ReplaceAll(errb.String(), dir, "$DIR")
	}

	// load: one from elsewhere; refusals say file:line:field.
	code, out, errs := cli("load", filepath.Dir(later))
	require.Equal(t, 0, code, errs)
	require.Equal(t, "loaded later 1.0 from $DIR/elsewhere/later/manifest.toml: 1 personalities\n", out)
	for _, tt := range []struct{ name, path string }{
		{"load-bad-key", bad},
		{"load-builtin-name", clash},
		{"load-again", later},
		{"load-missing", filepath.Join(dir, "nowhere")},
	} {
		code, _, errs := cli("load", tt.path)
		golden(t, filepath.Join("errors", tt.name+".txt"), []byte(fmt.Sprintf("exit %d\n", code)+errs))
	}

	require.Eventually(t, func() bool { return rowOf(t, driversJSON(t, sock), "sg").Instances == 1 },
		10*time.Second, 10*time.Millisecond, "the boot scenario's disk is matched")
	code, out, errs = cli("drivers")
	require.Equal(t, 0, code, errs)
	golden(t, "drivers.txt", []byte(out))
	code, out, errs = cli("drivers", "-o", "json")
	require.Equal(t, 0, code, errs)
	golden(t, "drivers.json", []byte(out))

	// The stick: the bundle's personality (score 1000) is tried first; its
	// executable, in a directory its user (65534) may not enter, cannot
	// run: a crash, counted, and usbstorage takes the stick.
	require.NoError(t, d.inject(ctx, "plug usb 2-1 vid=46f4 pid=0001 serial=B1 ifaces=08/06/50\n"))
	doc := driversJSON(t, sock)
	stick := rowOf(t, doc, "stick")
	require.Equal(t, 0, stick.Instances)
	require.Contains(t, stick.LastError, "spawn stick: fork/exec "+dir+"/drivers.d/stick/drv: permission denied")
	require.Equal(t, "loaded", stick.State)
	require.Equal(t, 1, stick.Crashes)
	require.Empty(t, stick.PIDs)
	require.True(t, stick.Runnable)
	require.Equal(t, 1, rowOf(t, doc, "usbstorage").Instances)

	// Unload a bundle: gone from the table, its name free again.
	code, out, errs = cli("unload", "later")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "unloaded later: every instance freed\n", out)
	for _, r := range driversJSON(t, sock).Drivers {
		require.NotEqual(t, "later", r.Name)
	}
	code, _, errs = cli("load", later)
	require.Equal(t, 0, code, errs)

	// Unload refused: an instance is held; the driver stays loaded and
	// matches again (the held instance was stopped and detached, so the
	// interface gets a new one).
	var held *driver.Service
	for _, s := range d.reg.Services() {
		if s.Class() == "USBMassStorage" && s.State().Active {
			held = s
		}
	}
	require.NotNil(t, held)
	held.TaggedRetain(holderTag{})
	code, _, errs = cli("unload", "usbstorage", "--timeout", "300ms")
	require.Equal(t, 1, code)
	require.True(t, strings.HasPrefix(errs, "drvctl unload: usbstorage stays loaded (drvctl unload --force unloads it anyway): unload usbstorage: classes have instances: USBMassStorage(1); held by:\n"), errs)
	golden(t, filepath.Join("errors", "unload-refused.txt"), []byte("exit 1\n"+normalizeUnload(errs)))
	us := rowOf(t, driversJSON(t, sock), "usbstorage")
	require.Equal(t, "loaded", us.State)
	require.Equal(t, 1, us.Terminating)
	require.Equal(t, 1, us.Instances, "rematched")

	// --force: unloaded, the held instance goes on terminating.
	code, out, errs = cli("unload", "usbstorage", "--timeout", "300ms", "--force")
	require.Equal(t, 0, code, errs)
	require.True(t, strings.HasSuffix(out, "\nunloaded usbstorage by force: 1 instance(s) still terminating\n"), out) // after the progress lines
	us = rowOf(t, driversJSON(t, sock), "usbstorage")
	require.Equal(t, "not loaded", us.State)
	require.Equal(t, 0, us.Instances)
	require.Equal(t, 1, us.Terminating)
	require.Contains(t, d.log.String(), "driver unloaded by force with instances left")
	// Asked again while the instance still terminates: nothing to keep
	// loaded, and it says so.
	code, _, errs = cli("unload", "usbstorage", "--timeout", "100ms")
	require.Equal(t, 1, code)
	require.True(t, strings.HasPrefix(errs, "drvctl unload: usbstorage was not loaded, its instances are still terminating: unload usbstorage: classes have instances: USBMassStorage(1)"), errs)
	require.Equal(t, "not loaded", rowOf(t, driversJSON(t, sock), "usbstorage").State, "not loaded back")
	held.TaggedRelease(holderTag{})
	<-held.Done()

	// Unloading what is not loaded any more is a command-line error.
	code, _, errs = cli("unload", "usbstorage")
	require.Equal(t, exitUsage, code)
	golden(t, filepath.Join("errors", "unload-not-loaded.txt"), []byte(fmt.Sprintf("exit %d\n", code)+errs))

	require.NoError(t, d.reg.WaitQuiet(ctx))
	hist, dropped := d.hub.History()
	require.Zero(t, dropped)
	var b bytes.Buffer
	for _, e := range hist {
		require.NoError(t, json.NewEncoder(&b).Encode(e))
	}
	evs, err := lifecycletest.ReadMonitorJSON(&b)
	require.NoError(t, err)
	require.NotEmpty(t, evs)
	require.NoError(t, lifecycletest.Validate(evs, true))
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
}

// normalizeUnload keeps the refusal's first line, not the holders after
// it (service IDs, test files and lines).
func normalizeUnload(s string) string {
	first, rest, _ := strings.Cut(s, "\n")
	if rest != "" {
		return first + "\n  …\n"
	}
	return s
}

// TestBundleNameClashes: at start, a bundle named like a --personality or
// like a bundle loaded before it is refused and listed, and the daemon
// serves the rest.
func TestBundleNameClashes(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	ddir := filepath.Join(dir, "drivers.d")
	writeBundle(t, ddir, "gadget", stickPersonality, true)
	writeBundle(t, ddir, "dup", stickPersonality, false) // dup/manifest.toml: loaded first ("dup" < "dup.toml")
	writeBundle(t, ddir, "dup", stickPersonality, true)
	require.NoError(t, os.Mkdir(filepath.Join(ddir, "empty"), 0o755)) // no manifest: not a bundle
	o := serveOptions{socket: filepath.Join(dir, "d.sock"), sim: scn, drivers: "sg", logFormat: "text", logLevel: "info",
		trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second, bundles: bundleOptions{dir: ddir}}
	require.NoError(t, o.personality.Set("name=gadget,driver=sg,type=0"))
	d := startServe(t, o)

	doc := driversJSON(t, o.socket)
	var rows []string
	for _, r := range doc.Drivers {
		rows = append(rows, r.Name+" "+r.Origin+" "+r.State+" "+strings.ReplaceAll(r.LastError, dir, "$DIR"))
	}
	require.Equal(t, []string{
		"dup bundle loaded ",
		"dup bundle refused load $DIR/drivers.d/dup.toml: name: already loaded: driver \"dup\" from $DIR/drivers.d/dup/manifest.toml (unload it first)",
		"gadget personality loaded ",
		"gadget bundle refused load $DIR/drivers.d/gadget.toml: name: already loaded: \"gadget\" is the name of a --personality",
		"hidkbd built-in not loaded ",
		"sg built-in loaded ",
		"usbstorage built-in not loaded ",
	}, rows)
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
}
