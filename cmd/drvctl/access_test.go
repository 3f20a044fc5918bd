package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/internal/statefile"
)

func TestSocketGIDRange(t *testing.T) {
	for _, g := range []int{-1, 0, 100, maxID} {
		require.NoError(t, checkSocketGID(g), "%d", g)
	}
	for _, g := range []int{-2, maxID + 1, 1 << 32} {
		require.ErrorContains(t, checkSocketGID(g), "want -1 (the daemon's group) or a group id", "%d", g)
	}
	_, err := parseIDs("allow-uids", "4294967295")
	require.ErrorContains(t, err, "not a numeric id from 0 to 4294967294")
}

// --allow-uids naming a user who cannot reach the 0660 socket (reading
// restricted with --read-any-user=false) is refused at start-up, not
// accepted as a rule nobody can use. With the default the socket is 0666:
// anyone reaches it.
func TestAllowUIDsNeedAReachableGroup(t *testing.T) {
	prev := lookupGroups
	t.Cleanup(func() { lookupGroups = prev })
	lookupGroups = func(uid uint32) ([]string, error) {
		switch uid {
		case 1000:
			return []string{"1000", "4242"}, nil
		}
		return nil, errors.New("unknown user")
	}
	own := strconv.Itoa(os.Getegid())
	o := serveOptions{socketGroup: -1, allowUIDs: "1000,1001"}
	_, err := buildPolicy(o)
	require.NoError(t, err, "a 0666 socket is reachable by all")
	require.Equal(t, os.FileMode(0o666), socketMode(o))
	o = serveOptions{socketGroup: -1, allowUIDs: "1000", readListed: true}
	require.Equal(t, os.FileMode(0o660), socketMode(o))
	_, err = buildPolicy(o)
	if own != "1000" && own != "4242" {
		require.ErrorContains(t, err, "uid 1000 cannot reach the socket (mode 0660, group "+own)
		require.ErrorContains(t, err, "give --socket-gid a group it is a member of")
	}
	o.socketGroup = 4242
	_, err = buildPolicy(o)
	require.NoError(t, err)
	o.allowUIDs = "1000,1001"
	_, err = buildPolicy(o)
	require.ErrorContains(t, err, "--allow-uids 1001: cannot tell whether it can reach the socket (group 4242): unknown user")
	o.allowUIDs, o.socketGroup = "0", -1
	_, err = buildPolicy(o)
	require.NoError(t, err, "root reaches any socket")
	o.socketGroup = 1 << 32
	_, err = buildPolicy(o)
	require.ErrorContains(t, err, "--socket-gid 4294967296")
}

// The monitor and the read verbs need the read right; --any-user does not
// give it, --read-gids does.
func TestServePolicyReadRight(t *testing.T) {
	p, err := buildPolicy(serveOptions{socketGroup: -1, anyUser: true, readGIDs: "20", adminGIDs: "10", readListed: true})
	require.NoError(t, err)
	require.False(t, p.ReadAnyUser)
	require.Contains(t, p.ReadClasses, monitorClass)
	for _, op := range []string{opInspect, opHistory, opLeaks, opWhy, opBlockers, opDrivers, opStatus} {
		require.Contains(t, p.ReadOps, op)
	}
	require.NotContains(t, p.ReadOps, opTerminate)
	require.NotContains(t, p.ReadOps, opUnload)
	require.Equal(t, []uint32{20}, p.ReadGIDs)
	p, err = buildPolicy(serveOptions{socketGroup: -1, adminUIDs: "1002", readUIDs: "1003"})
	require.NoError(t, err)
	require.True(t, p.ReadAnyUser, "the default lets every local user read")
	require.Equal(t, []uint32{1002}, p.AdminUIDs)
	require.Equal(t, []uint32{1003}, p.ReadUIDs)
}

// A state directory others may write to is refused before anything runs.
func TestServeRefusesUnsafeStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.Chmod(dir, 0o777))
	o := serveOptions{socketGroup: -1, logFormat: "text", logLevel: "info", trace: "all", stateDir: dir, socket: filepath.Join(t.TempDir(), "s"),
		termTimeout: time.Second, closeTimeout: time.Second}
	err := serve(context.Background(), o, io.Discard, nil)
	require.ErrorIs(t, err, statefile.ErrUnsafeDir)
	require.ErrorContains(t, err, "--state-dir: unsafe state directory: "+dir+" has mode 0777: writable by group or others")
}

// A kernel overflow reaches monitors as a warning line saying why they see
// a gap.
func TestMonitorHearsOfKernelOverflow(t *testing.T) {
	h := newMonitorHub()
	var got []monitorEvent
	cancel := h.subscribe(func(e monitorEvent) { got = append(got, e) })
	defer cancel()
	h.kernelOverflow(3)
	require.Len(t, got, 1)
	var b strings.Builder
	require.NoError(t, writeMonitorLine(&b, &got[0], false))
	require.Regexp(t, `^WARNING\[[0-9.]+\] the kernel dropped uevents \(receive buffer overflow\); resynced 3 events from sysfs\n$`, b.String())
}
