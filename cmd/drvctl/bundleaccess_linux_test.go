package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
)

// TestBundleAccessOverSocket: a bundle's [access] table, enforced on real
// unprivileged processes (this test binary run as other uids, gids and
// supplementary groups; needs root) over the daemon's socket. The Python
// sample bundle lists uid 65533 and group 4242: those, the admins and
// root open its instance, and nobody else does — not a user --allow-uids
// admits, who hears "no such service" exactly as for a driver that does
// not exist, nor one no rule admits, who hears "permission denied" for
// both. The listed users need no daemon flag. Unloaded and loaded again
// with another list, the new list holds; loaded with none, the daemon's
// policy decides again.
func TestBundleAccessOverSocket(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run processes as other users")
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("python3 is not in /usr/bin: the Python sample bundle cannot run")
	}
	leaktest.Check(t)
	dir, err := os.MkdirTemp("", "drvctl-access-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	ddir := filepath.Join(dir, "drivers.d")
	bdir := filepath.Join(ddir, "pycounter")
	require.NoError(t, os.MkdirAll(bdir, 0o755))
	src := filepath.Join("..", "..", "examples", "bundles", "pycounter")
	py, err := os.ReadFile(filepath.Join(src, "driver.py"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(bdir, "driver.py"), py, 0o755))
	manifest, err := os.ReadFile(filepath.Join(src, "manifest.toml"))
	require.NoError(t, err)
	writeAccess := func(access string) {
		require.NoError(t, os.WriteFile(filepath.Join(bdir, "manifest.toml"), append(manifest, "\n"+access+"\n"...), 0o644))
	}
	writeAccess("[access]\nuids = [65533]\ngids = [4242]")
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, nil, 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "info",
		trace: "all", socketGroup: -1, termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second,
		allowUIDs: "65531", adminUIDs: "65532", bundles: bundleOptions{dir: ddir}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := func(args ...string) string {
		e, out, errb := testEnv(nil, 0)
		require.Equal(t, 0, run(append(args, "--socket", sock), e), errb.String())
		return out.String()
	}
	running := func() {
		t.Helper()
		require.Eventually(t, func() bool {
			row := rowOf(t, driversJSON(t, sock), "pycounter")
			return row.Instances == 1 && len(row.PIDs) == 1
		}, 20*time.Second, 10*time.Millisecond)
	}
	require.NoError(t, d.inject(ctx, "plug usb 1-1 vid=1209 pid=0001 product=\"Counter\" ifaces=03/00/00 hid=keyboard"))
	running()
	require.Equal(t, &accessRow{UIDs: []uint32{65533}, GIDs: []uint32{4242}}, rowOf(t, driversJSON(t, sock), "pycounter").Access,
		"drivers -o json shows the list")

	// open runs the application as uid/gid/groups and asks for personality.
	open := func(uid, gid uint32, groups []uint32, personality string) string {
		t.Helper()
		cmd := asNobody(t, dir, "--open-as-app", personality, sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return fmt.Sprintf("exit %d: %s", exitCode(t, err), strings.ReplaceAll(out.String(), personality, "NAME"))
	}
	const opened = "exit 0: opened Counter\n"
	type who struct {
		name     string
		uid, gid uint32
		groups   []uint32
	}
	var (
		listedUID      = who{"listed uid", 65533, 65533, nil}
		listedPrimary  = who{"listed primary group", 65534, 4242, nil}
		listedSupplied = who{"listed supplementary group", 65534, 65534, []uint32{100, 4242}}
		admin          = who{"admin", 65532, 65532, nil}
		allowed        = who{"--allow-uids", 65531, 65531, nil}
		nobodyAtAll    = who{"no rule", 65534, 65534, []uint32{100}}
	)
	// want: opened, or refused exactly as for a driver that does not exist.
	check := func(t *testing.T, w who, want bool) {
		got := open(w.uid, w.gid, w.groups, "pycounter")
		if want {
			require.Equal(t, opened, got, w.name)
			return
		}
		require.NotEqual(t, opened, got, w.name)
		require.Equal(t, open(w.uid, w.gid, w.groups, "nosuchdriver"), got, "%s: the refusal is no oracle", w.name)
	}
	t.Run("listed", func(t *testing.T) {
		for _, w := range []who{listedUID, listedPrimary, listedSupplied, admin} {
			check(t, w, true)
		}
		for _, w := range []who{allowed, nobodyAtAll} {
			check(t, w, false)
		}
		require.Contains(t, open(allowed.uid, allowed.gid, nil, "pycounter"), "no such service")
		require.Contains(t, open(nobodyAtAll.uid, nobodyAtAll.gid, nobodyAtAll.groups, "pycounter"), "permission denied")
		// Root's own application, in process.
		c, err := userclient.Dial(ctx, sock)
		require.NoError(t, err)
		h, err := c.Open(ctx, userclient.Match{Personality: "pycounter"})
		require.NoError(t, err)
		require.NoError(t, h.Close())
		require.NoError(t, c.Close())
		require.Contains(t, d.log.String(), "its own access list admits only uid 0, the admins, uids [65533] and gids [4242]",
			"the audit log says why")
	})

	reload := func(access string) {
		t.Helper()
		require.Contains(t, cli("unload", "pycounter"), "every instance freed")
		writeAccess(access)
		cli("load", bdir)
		running()
	}
	t.Run("reloaded with another list", func(t *testing.T) {
		reload("[access]\nuids = [65531]")
		check(t, allowed, true)
		check(t, admin, true)
		for _, w := range []who{listedUID, listedPrimary, listedSupplied, nobodyAtAll} {
			check(t, w, false)
		}
	})
	t.Run("reloaded with none: the daemon's policy", func(t *testing.T) {
		reload("")
		require.Nil(t, rowOf(t, driversJSON(t, sock), "pycounter").Access)
		check(t, allowed, true)
		for _, w := range []who{listedUID, listedSupplied, admin, nobodyAtAll} {
			check(t, w, false)
		}
	})
	require.Contains(t, cli("unload", "pycounter"), "every instance freed")
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
}
