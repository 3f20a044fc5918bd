package bundle_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/bundle"
)

const good = `# An FTDI serial adapter's driver.
name    = "ftdi-serial"
version = "1.2.0"
summary = "FTDI USB serial adapters"

[run]
executable = "ftdi-serial"
args       = ["--quiet"]
user       = "1000"
group      = "20"

[restart]
max_crashes = 3
window      = "30s"
backoff     = "500ms"
max_backoff = "10s"

[access]
uids = [1000]
gids = [20, 46]

[[personality]]
name           = "ft232"
provider_class = "USBInterface"
score          = 100
[personality.match]
vid = 0x0403
pid = { value = 0x6000, mask = 0xff00 }

[[personality]]
provider_class = "HIDDevice"
category       = "hid"
match.usage_page = 0x01
match.usage      = 0x06

[[method]]
name      = "set-baud"
max_input = 8
`

// bundleDir makes a bundle directory with an executable called
// ftdi-serial of mode perm and the manifest text.
func bundleDir(t *testing.T, text string, perm os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, "ftdi-serial")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, os.Chmod(exe, perm))
	require.NoError(t, os.WriteFile(filepath.Join(dir, bundle.ManifestName), []byte(text), 0o644))
	return dir
}

var opts = bundle.Options{Reserved: func(n string) bool { return n == "usbstorage" || n == "sg" }}

func TestLoadGood(t *testing.T) {
	dir := bundleDir(t, good, 0o755)
	m, err := bundle.Load(dir, opts)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, bundle.ManifestName), m.Path)
	require.Equal(t, "ftdi-serial", m.Name)
	require.Equal(t, "1.2.0", m.Version)
	require.Equal(t, filepath.Join(dir, "ftdi-serial"), m.Executable)
	require.Equal(t, []string{"--quiet"}, m.Args)
	require.Equal(t, uint32(1000), m.UID)
	require.Equal(t, uint32(20), m.GID)
	require.Equal(t, bundle.Restart{MaxCrashes: 3, Window: 30 * time.Second, Backoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second}, m.Restart)
	require.Equal(t, bundle.Access{UIDs: []uint32{1000}, GIDs: []uint32{20, 46}}, m.Access)
	require.Len(t, m.Personalities, 2)
	p := m.Personalities[0]
	require.Equal(t, "ft232", p.Label)
	require.Equal(t, "USBInterface", p.ProviderClass)
	require.Equal(t, "ftdi-serial", p.Class)
	require.Equal(t, 100, p.Score)
	require.Equal(t, []bundle.Match{
		{Key: "pid", Prop: "idProduct", Value: uint64(0x6000), Mask: 0xff00},
		{Key: "vid", Prop: "idVendor", Value: uint64(0x0403)},
	}, p.Match)
	require.Equal(t, "hid", m.Personalities[1].Category)
	require.Len(t, m.Personalities[1].Match, 2)
	require.Equal(t, []bundle.Method{{Name: "set-baud", MaxInput: 8}}, m.Methods)

	// The same file named directly; defaults without [restart].
	noRestart := strings.Replace(good, "[restart]\nmax_crashes = 3\nwindow      = \"30s\"\nbackoff     = \"500ms\"\nmax_backoff = \"10s\"\n", "", 1)
	dir = bundleDir(t, noRestart, 0o750)
	m, err = bundle.Load(filepath.Join(dir, bundle.ManifestName), opts)
	require.NoError(t, err)
	require.Equal(t, bundle.DefaultRestart, m.Restart)

	// A sticky directory writable by everyone (like /tmp) is fine: only
	// the executable's owner may replace it.
	require.NoError(t, os.Chmod(dir, 0o777|os.ModeSticky))
	_, err = bundle.Load(dir, opts)
	require.NoError(t, err)
}

// TestLoadInvalid: each bad field is refused with the file, its line and
// its name, and nothing is returned.
func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		name string
		old  string // replaced in good by new
		new  string
		perm os.FileMode
		dir  os.FileMode // of the bundle directory, if not 0
		err  string      // after "load FILE"
		is   error
	}{
		{name: "syntax", old: `version = "1.2.0"`, new: `version = "1.2.0`, err: `:3: version: invalid manifest: strings cannot contain newlines`},
		{name: "unknown key", old: `summary = `, new: `summry = `, err: `:4: summry: invalid manifest: unknown key`},
		{name: "unknown key in array", old: "score          = 100\n", new: "score          = 100\nscroe = 1\n", err: `:26: personality.scroe: invalid manifest: unknown key`},
		{name: "wrong type", old: `args       = ["--quiet"]`, new: `args       = "--quiet"`, err: `:8: run.args: invalid manifest: incompatible types: TOML value has type string; destination has type slice`},
		{name: "no name", old: `name    = "ftdi-serial"`, new: ``, err: `: name: invalid manifest: missing`},
		{name: "bad name", old: `name    = "ftdi-serial"`, new: `name    = "FTDI serial"`, err: `:2: name: invalid manifest: "FTDI serial" is not a driver name (lower-case letters, digits, '.', '_', '-'; at most 64)`},
		{name: "built-in name", old: `name    = "ftdi-serial"`, new: `name    = "usbstorage"`, err: `:2: name: invalid manifest: "usbstorage" is the name of a built-in driver`},
		{name: "no version", old: `version = "1.2.0"`, new: `version = ""`, err: `:3: version: invalid manifest: missing`},
		{name: "no executable", old: `executable = "ftdi-serial"`, new: ``, err: `:6: run.executable: invalid manifest: missing`},
		{name: "missing executable", old: `executable = "ftdi-serial"`, new: `executable = "nope"`, err: `:7: run.executable: invalid manifest: DIR/nope: no such file or directory`},
		{name: "directory executable", old: `executable = "ftdi-serial"`, new: `executable = "."`, err: `:7: run.executable: invalid manifest: DIR is not a regular file`},
		{name: "not executable", perm: 0o644, err: `:7: run.executable: invalid manifest: DIR/ftdi-serial is not executable`},
		{name: "world-writable", perm: 0o757, err: `:7: run.executable: invalid manifest: DIR/ftdi-serial is writable by everyone`},
		{name: "world-writable directory", dir: 0o777, err: `:7: run.executable: invalid manifest: DIR/ftdi-serial is in a directory writable by everyone`},
		{name: "no user", old: `user       = "1000"`, new: ``, err: `:6: run.user: invalid manifest: missing: say which user the driver runs as`},
		{name: "unknown user", old: `user       = "1000"`, new: `user       = "no-such-user-drvkit"`, err: `:9: run.user: invalid manifest: no user "no-such-user-drvkit"`},
		{name: "unknown group", old: `group      = "20"`, new: `group      = "no-such-group-drvkit"`, err: `:10: run.group: invalid manifest: no group "no-such-group-drvkit"`},
		{name: "root", old: `user       = "1000"`, new: `user       = "0"`, err: `:9: run.user: runs as root: "0" is uid 0 (the daemon allows it only with --allow-root-drivers)`, is: bundle.ErrRoot},
		{name: "root group", old: `group      = "20"`, new: `group      = "0"`, err: `:10: run.group: runs as root: the group is gid 0 (the daemon allows it only with --allow-root-drivers)`, is: bundle.ErrRoot},
		{name: "max crashes", old: `max_crashes = 3`, new: `max_crashes = 0`, err: `:13: restart.max_crashes: invalid manifest: 0: want at least 1`},
		{name: "window", old: `window      = "30s"`, new: `window      = "-1s"`, err: `:14: restart.window: invalid manifest: -1s: want a positive duration`},
		{name: "bad duration", old: `window      = "30s"`, new: `window      = "soon"`, err: `:14: restart.window: invalid manifest: invalid duration: "soon"`},
		{name: "backoff order", old: `max_backoff = "10s"`, new: `max_backoff = "100ms"`, err: `:16: restart.max_backoff: invalid manifest: 100ms is less than backoff 500ms`},
		{name: "uid", old: `uids = [1000]`, new: `uids = [-1]`, err: `:19: access.uids: invalid manifest: element 0: -1 is not a uid`},
		{name: "no personality", old: good[strings.Index(good, "[[personality]]"):strings.Index(good, "[[method]]")], new: "", err: `: personality: invalid manifest: missing: a bundle needs at least one [[personality]]`},
		{name: "not toml", old: good, new: "{}", err: `:1: invalid manifest: expected '.' or '=', but got '{' instead`},
		{name: "no provider class", old: `provider_class = "USBInterface"`, new: ``, err: `:22: personality[0].provider_class: invalid manifest: missing (one of HIDDevice, SCSIDevice, USBInterface)`},
		{name: "unknown provider class", old: `provider_class = "HIDDevice"`, new: `provider_class = "Serial"`, err: `:31: personality[1].provider_class: invalid manifest: unknown provider class "Serial" (want one of HIDDevice, SCSIDevice, USBInterface)`},
		{name: "no match", old: "[personality.match]\nvid = 0x0403\npid = { value = 0x6000, mask = 0xff00 }\n", new: "", err: `:22: personality[0].match: invalid manifest: missing: a personality must match on at least one key (class, interface, pid, protocol, subclass, vid)`},
		{name: "key of another class", old: `vid = 0x0403`, new: `usage = 6`, err: `:27: personality[0].match.usage: invalid manifest: USBInterface has no key "usage" (want class, interface, pid, protocol, subclass, vid)`},
		{name: "too big", old: `vid = 0x0403`, new: `vid = 0x10000`, err: `:27: personality[0].match.vid: invalid manifest: value: 65536 does not fit in 16 bits (0 to 0xffff)`},
		{name: "string for int", old: `vid = 0x0403`, new: `vid = "0403"`, err: `:27: personality[0].match.vid: invalid manifest: want an integer or {value, mask}, not a string`},
		{name: "zero mask", old: `mask = 0xff00`, new: `mask = 0`, err: `:28: personality[0].match.pid: invalid manifest: mask: 0 would match everything`},
		{name: "mask key", old: `mask = 0xff00`, new: `maks = 0xff00`, err: `:28: personality[0].match.pid: invalid manifest: unknown key "maks" (want value and mask)`},
		{name: "dotted key second personality", old: `match.usage      = 0x06`, new: `match.usage      = 0x10006`, err: `:34: personality[1].match.usage: invalid manifest: value: 65542 does not fit in 16 bits (0 to 0xffff)`},
		{name: "score", old: `score          = 100`, new: `score          = 10000000`, err: `:25: personality[0].score: invalid manifest: 10000000 is out of range (±1000000)`},
		{name: "method name", old: `name      = "set-baud"`, new: `name      = ""`, err: `:37: method[0].name: invalid manifest: missing`},
		{name: "method size", old: `max_input = 8`, new: `max_input = -8`, err: `:38: method[0].max_input: invalid manifest: negative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := good
			if tt.old != "" {
				require.Contains(t, text, tt.old)
				text = strings.Replace(text, tt.old, tt.new, 1)
			}
			perm := tt.perm
			if perm == 0 {
				perm = 0o755
			}
			dir := bundleDir(t, text, perm)
			if tt.dir != 0 {
				require.NoError(t, os.Chmod(dir, tt.dir))
			}
			file := filepath.Join(dir, bundle.ManifestName)
			m, err := bundle.Load(dir, opts)
			require.Nil(t, m)
			require.Error(t, err)
			var oe *bundle.OpError
			require.ErrorAs(t, err, &oe)
			require.Equal(t, file, oe.File)
			want := "load " + file + strings.ReplaceAll(tt.err, "DIR", dir)
			require.Equal(t, want, err.Error())
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			} else {
				require.ErrorIs(t, err, bundle.ErrInvalid)
			}
		})
	}
}

func TestLoadRootAllowed(t *testing.T) {
	text := strings.Replace(good, `user       = "1000"`, `user       = "0"`, 1)
	o := opts
	o.AllowRoot = true
	m, err := bundle.Load(bundleDir(t, text, 0o755), o)
	require.NoError(t, err)
	require.Equal(t, uint32(0), m.UID)
}

func TestLoadMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := bundle.Load(dir, opts)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Equal(t, "load "+filepath.Join(dir, bundle.ManifestName)+": no such file or directory", err.Error())
	require.False(t, errors.Is(err, bundle.ErrInvalid))
}
