package sim_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
)

// TestResyncAfterLostEvents uses the simulator's sysfs mirror as the
// machine: the consumer sees the first part of a scenario, loses every
// event of the second part (as with ENOBUFS), and the tracker's resync
// must give back exactly what was lost — removes of the unplugged stick's
// whole tree (children first), adds of the new one (parents first).
func TestResyncAfterLostEvents(t *testing.T) {
	const partOne = `
scsi add 0:0:0:0
plug usb 2-1 vid=46f4 pid=0001 serial=A ifaces=08/06/50
plug usb 2-2 vid=46f4 pid=0001 serial=B ifaces=08/06/50
`
	sc, err := sim.ParseScenarioString("lost.scn", partOne)
	require.NoError(t, err)
	// How many events part one makes (the simulator is deterministic).
	counter, err := sim.New(sc, sim.Config{})
	require.NoError(t, err)
	n := len(drain(t, counter))
	counter.Close()
	dir := t.TempDir()
	src, err := sim.New(sc, sim.Config{SysfsDir: dir, Live: true})
	require.NoError(t, err)
	defer src.Close()
	tr := hotplug.NewTracker(dir, append(buses.Classes(), hotplug.ClassBlock))

	// Part one: seen.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range n {
		ev, err := src.Next(ctx)
		require.NoError(t, err)
		tr.Track(&ev)
	}
	fix, err := tr.Resync()
	require.NoError(t, err)
	require.Empty(t, fix, "the mirror agrees with the events seen")
	before := tr.Len()

	// Part two: lost.
	lost, err := sim.ParseScenarioFragment("lost", `
unplug 2-1
plug usb 1-1 vid=0781 pid=5567 serial=C ifaces=08/06/50
scsi remove 0:0:0:0
scsi add 0:0:0:0
`)
	require.NoError(t, err)
	injected := make(chan error, 1)
	go func() { injected <- src.Inject(context.Background(), lost) }()
	// Lost: read until Inject says all were handed out.
	for done := false; !done; {
		select {
		case err := <-injected:
			require.NoError(t, err)
			done = true
		default:
			nctx, ncancel := context.WithTimeout(ctx, 20*time.Millisecond)
			_, err := src.Next(nctx)
			ncancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				require.NoError(t, err)
			}
		}
	}

	fix, err = tr.Resync()
	require.NoError(t, err)
	var removes, adds []string
	for _, ev := range fix {
		require.Equal(t, hotplug.OriginResync, ev.Origin)
		if ev.Action == hotplug.ActionRemove {
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
	// 2-1 left with 2 usb + host, target, LUN, sg, disk; 1-1 came with as many.
	require.Equal(t, before, tr.Len())
	fix, err = tr.Resync()
	require.NoError(t, err)
	require.Empty(t, fix, "a second resync finds nothing")
}
