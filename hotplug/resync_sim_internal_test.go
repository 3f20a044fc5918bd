package hotplug

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestResyncAfterLostEvents uses the simulator's sysfs mirror as the
// machine: the consumer sees the first part of a scenario, loses every
// event of the second part (as with ENOBUFS), and the resync diff must
// give back exactly what was lost — removes of the unplugged stick's whole
// tree (children first), adds of the new one (parents first).
func TestResyncAfterLostEvents(t *testing.T) {
	sc, err := ParseScenarioString("lost.scn", `
scsi add 0:0:0:0
plug usb 2-1 vid=46f4 pid=0001 serial=A ifaces=08/06/50
plug usb 2-2 vid=46f4 pid=0001 serial=B ifaces=08/06/50
wait 1h
unplug 2-1
plug usb 1-1 vid=0781 pid=5567 serial=C ifaces=08/06/50
scsi remove 0:0:0:0
scsi add 0:0:0:0
`)
	require.NoError(t, err)
	dir := t.TempDir()
	classes := []Class{ClassUSB, ClassSCSI, ClassSCSIGeneric, ClassBlock}
	tracked := map[string]bool{"usb": true, "scsi": true, "scsi_generic": true, "block": true}
	sim, err := NewSim(sc, SimConfig{SysfsDir: dir})
	require.NoError(t, err)
	defer sim.Close()

	known := map[string]device{}
	consume := func(ev Event) {
		if !tracked[ev.Subsystem] {
			return
		}
		switch ev.Action {
		case ActionAdd:
			// As the netlink source does: note the sysfs inode at the add.
			var ino uint64
			if fi, err := os.Stat(filepath.Join(dir, ev.DevPath)); err == nil {
				ino = inode(fi)
			}
			known[ev.DevPath] = device{Event: ev, ino: ino}
		case ActionRemove:
			delete(known, ev.DevPath)
		}
	}
	// Part one, up to the wait: seen.
	ctx, cancel := context.WithCancel(context.Background())
	for {
		ev, err := sim.Next(ctxWithImmediateWait(ctx, sim))
		if errors.Is(err, context.Canceled) {
			break
		}
		require.NoError(t, err)
		consume(ev)
	}
	cancel()
	now, err := walk(dir, classes, OriginColdplug)
	require.NoError(t, err)
	require.Empty(t, diff(known, now, OriginResync), "the mirror agrees with the events seen")

	// Part two: lost. Record what really happened to compare.
	truth := map[string]device{}
	for k, v := range known {
		truth[k] = v
	}
	sim.cfg.SkipWaits = true
	for {
		ev, err := sim.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if !tracked[ev.Subsystem] {
			continue
		}
		switch ev.Action {
		case ActionAdd:
			truth[ev.DevPath] = device{Event: ev}
		case ActionRemove:
			delete(truth, ev.DevPath)
		}
	}
	now, err = walk(dir, classes, OriginColdplug)
	require.NoError(t, err)
	fix := diff(known, now, OriginResync)
	var removes, adds []string
	for _, ev := range fix {
		consume(ev)
		if ev.Action == ActionRemove {
			removes = append(removes, ev.Subsystem+" "+ev.Name())
		} else {
			adds = append(adds, ev.Subsystem+" "+ev.Name())
		}
	}
	// 2-1's tree goes, children first. 0:0:0:0 was removed and re-added
	// at the same path with the same environment: only the sysfs inode
	// tells, and it is replaced too, with its sg node and disk. Its target
	// went away with it (last LUN) and came back: replaced as well.
	require.Equal(t, []string{
		"scsi_generic sg1", "block sdb", "scsi_generic sg0", "block sda",
		"scsi 1:0:0:0", "scsi target1:0:0", "scsi 0:0:0:0", "scsi host1", "scsi target0:0:0",
		"usb 2-1:1.0", "usb 2-1",
	}, removes)
	require.Equal(t, []string{
		"usb 1-1", "usb 1-1:1.0", "scsi target0:0:0", "scsi host1", "scsi 0:0:0:0", "scsi target1:0:0",
		"scsi 1:0:0:0", "block sda", "scsi_generic sg0", "block sdb", "scsi_generic sg1",
	}, adds)
	// After the fix the consumer's view is exactly the truth.
	require.Equal(t, len(truth), len(known))
	for p := range truth {
		require.Contains(t, known, p)
	}
}

// ctxWithImmediateWait returns a context that is cancelled as soon as the
// simulator reaches a wait step, so the test stops reading there.
func ctxWithImmediateWait(ctx context.Context, s *Sim) context.Context {
	if s.pos < len(s.sc.Steps) && s.sc.Steps[s.pos].Cmd == "wait" && len(s.queue) == 0 {
		c, cancel := context.WithCancel(ctx)
		cancel()
		return c
	}
	return ctx
}
