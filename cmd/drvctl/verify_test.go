package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// normalizeVerify drops what changes from run to run: times.
func normalizeVerify(s string) string {
	s = regexp.MustCompile(`(?m)^time: .*$`).ReplaceAllString(s, "time: T")
	return regexp.MustCompile(`"(\w*_)?elapsed_ns": \d+`).ReplaceAllString(s, `"${1}elapsed_ns": 0`)
}

// TestVerifyGolden: drvctl verify on a built-in driver, a few steps and
// faults (the full default budget is make stress's), in text and JSON.
func TestVerifyGolden(t *testing.T) {
	leaktest.Check(t)
	args := []string{"verify", "sg", "--steps", "start,call,stop", "--faults", "unplug,app-kill,panic,io-error,driver-kill", "--random", "0"}
	for _, c := range []struct{ format, file string }{{"text", "verify-sg.txt"}, {"json", "verify-sg.json"}} {
		e, out, errb := testEnv(nil, 0)
		code := run(append(args, "-o", c.format), e)
		require.Equal(t, exitOK, code, "stderr: %s\nstdout: %s", errb, out)
		golden(t, c.file, []byte(normalizeVerify(out.String())))
		if c.format == "json" {
			var doc struct {
				SchemaVersion int            `json:"schema_version"`
				Passed        bool           `json:"passed"`
				Covered       map[string]int `json:"covered"`
			}
			require.NoError(t, json.Unmarshal(out.Bytes(), &doc))
			require.True(t, doc.Passed)
			require.Equal(t, 1, doc.SchemaVersion)
			require.Equal(t, 12, doc.Covered["covered"])
		}
	}
}

// TestVerifyReplay: a schedule as a failure prints it runs alone.
func TestVerifyReplay(t *testing.T) {
	leaktest.Check(t)
	e, out, errb := testEnv(nil, 0)
	code := run([]string{"verify", "usbstorage", "--replay", "faults=no-device@call teardown=app-kill,unplug io=2ms procs"}, e)
	require.Equal(t, exitOK, code, "stderr: %s", errb)
	require.Contains(t, out.String(), "PASS: verify usbstorage on usb 46f4:0001 (08/06/50)\nruns: 1 (1 systematic, 0 random), failures: 0\n")
}

// TestVerifyErrors: what drvctl verify refuses, and how.
func TestVerifyErrors(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "manifest.toml")
	require.NoError(t, os.WriteFile(manifest, []byte("name = \"tablet\"\nversion = \"0.1\"\n[run]\nexecutable = \"/bin/true\"\n"+
		"user = \"65534\"\ngroup = \"65534\"\n[[personality]]\nprovider_class = \"HIDDevice\"\nmatch.usage_page = 0x0d\n"), 0o644))
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"verify"}, exitUsage, "drvctl verify: want one driver name or bundle path\n"},
		{[]string{"verify", "nosuch", "--drivers-dir", dir}, exitUsage, `drvctl verify: unknown driver "nosuch" (built-in: hidkbd, sg, usbstorage; or a bundle: a path, or a name in ` + dir + ")\n"},
		{[]string{"verify", "sg", "--device", "floppy"}, exitUsage, `drvctl verify: unknown device model "floppy" (want hid-keyboard, scsi-disk, usb-storage)` + "\n"},
		{[]string{"verify", "sg", "--replay", "faults=melt@start"}, exitUsage, `drvctl verify: --replay: bad schedule: fault "melt@start": unknown fault kind "melt"` + "\n"},
		{[]string{"verify", "sg", "--faults", "melt"}, exitFail, `drvctl verify: verify: unknown fault kind "melt"` + "\n"},
		{[]string{"verify", dir}, exitFail, "drvctl verify: no device model fits the bundle tablet (tablet#0: usage page 0xd (the HID model is a keyboard, page 1)): give one with --device or verify.Options.Device\n"},
		{[]string{"verify", "--drivers-dir", filepath.Dir(dir), filepath.Base(dir), "--device", "hid-keyboard", "--steps", "start", "--faults", "unplug"}, exitFail,
			"drvctl verify: verify tablet: the driver never started on the device model hid-keyboard 0627:0001 in 1 runs (do its personalities match it? choose another model: --device, Options.Device)\n"},
	} {
		code, stderr := runCLI(c.args...)
		require.Equal(t, c.code, code, "%v: %s", c.args, stderr)
		if i := regexp.MustCompile(`usage: drvctl`).FindStringIndex(stderr); i != nil {
			stderr = stderr[:i[0]]
		}
		require.Equal(t, c.want, stderr, "%v", c.args)
	}
}
