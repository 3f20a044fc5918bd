package sim_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/sim"
)

func simEvents(t *testing.T, scenario string) []hotplug.Event {
	t.Helper()
	sc, err := sim.ParseScenarioString("bind", scenario)
	require.NoError(t, err)
	s, err := sim.New(sc, sim.Config{SysfsDir: t.TempDir()})
	require.NoError(t, err)
	defer s.Close()
	var out []hotplug.Event
	for {
		ev, err := s.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, ev)
	}
}

func lines(evs []hotplug.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Action.String()+" "+e.Subsystem+" "+e.Get("DRIVER"))
	}
	return out
}

// TestSimBindUnbind: a user-space claim of a usb-storage interface is what
// the kernel shows — the SCSI disk goes, the interface is unbound and bound
// to usbfs — and re-attaching usb-storage brings a disk back.
func TestSimBindUnbind(t *testing.T) {
	const plug = "plug usb 2-1 vid=46f4 pid=0001 serial=X ifaces=08/06/50\n"
	base := len(simEvents(t, plug))
	evs := simEvents(t, plug+"unbind 2-1 iface=0\nbind 2-1 iface=0 driver=usbfs\n")[base:]
	got := lines(evs)
	require.Contains(t, got, "remove scsi_generic ")
	require.Contains(t, got, "remove block ")
	require.Equal(t, "unbind usb ", got[len(got)-2])
	require.Equal(t, "bind usb usbfs", got[len(got)-1])

	evs = simEvents(t, plug+"unbind 2-1 iface=0\nbind 2-1 iface=0 driver=usbfs\nunbind 2-1 iface=0\nbind 2-1 iface=0 driver=usb-storage\nunplug 2-1\n")
	var adds, removes int
	for _, e := range evs {
		switch e.Action {
		case hotplug.ActionAdd:
			adds++
		case hotplug.ActionRemove:
			removes++
		}
	}
	require.Equal(t, adds, removes, "every add has its remove")
	n := 0
	for _, e := range evs {
		if e.Subsystem == "scsi_generic" && e.Action == hotplug.ActionAdd {
			n++
		}
	}
	require.Equal(t, 2, n, "the disk is scanned at plug and again when usb-storage is re-attached")
}

func TestSimBindErrors(t *testing.T) {
	for _, tt := range []struct{ scenario, want string }{
		{"unbind 2-1 iface=0\n", "no device at port 2-1"},
		{"plug usb 2-1 vid=1 pid=2 ifaces=08/06/50\nunbind 2-1 iface=3\n", "has interfaces 0..0"},
		{"plug usb 2-1 vid=1 pid=2 ifaces=08/06/50\nbind 2-1 iface=0 driver=usbfs\n", "is bound to usb-storage"},
		{"plug usb 2-1 vid=1 pid=2 ifaces=08/06/50\nunbind 2-1 iface=0\nunbind 2-1 iface=0\n", "has no driver"},
		{"plug usb 2-1 vid=1 pid=2 ifaces=08/06/50\nunbind 2-1 iface=0\nbind 2-1 iface=0\n", "want driver=NAME"},
		{"bind 2-1\n", "want bind PORT iface=N driver=NAME"},
	} {
		_, err := sim.ParseScenarioString("bad", tt.scenario)
		require.Error(t, err, tt.scenario)
		require.True(t, strings.Contains(err.Error(), tt.want), "%s: %v", tt.scenario, err)
	}
}
