//go:build linux

package devgrant_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/hotplug/hidbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// What the daemon refuses to grant: a nub that names no node, a node that
// is not a character device (a regular file, a symlink), a node that is
// gone; each is an OpError naming the nub and the node once.
func TestGrantRefuses(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	dir := t.TempDir()
	regular := filepath.Join(dir, "hidraw0")
	require.NoError(t, os.WriteFile(regular, nil, 0o600))
	link := filepath.Join(dir, "hidraw1")
	require.NoError(t, os.Symlink("/dev/null", link))
	kernel := drivertable.NewResources()
	drivertable.Provide(kernel, devgrant.HIDKey, func() (hid.Backend, error) { return hid.Hidraw{}, nil })
	sim := drivertable.NewResources()
	drivertable.Provide(sim, devgrant.HIDKey, func() (hid.Backend, error) { return hidsim.New(), nil })
	r := newRegistry(t)
	for _, c := range []struct {
		name  string
		res   *drivertable.Resources
		props map[string]any
		is    error
		text  string
	}{
		{"no node", kernel, nil, devgrant.ErrNoNode, "grant %s: nub names no device node (hidraw)"},
		{"regular file", kernel, map[string]any{hidbus.PropHidraw: regular}, devgrant.ErrNotDevice, "grant %s " + regular + ": not a device node of its class"},
		{"symlink", kernel, map[string]any{hidbus.PropHidraw: link}, nil, "grant %s: open " + link + ": too many levels of symbolic links"},
		{"gone", kernel, map[string]any{hidbus.PropHidraw: filepath.Join(dir, "hidraw9")}, os.ErrNotExist, ""},
		{"simulated device gone", sim, map[string]any{hidbus.PropHidraw: "/dev/hidraw0"}, hid.ErrNoDevice, "grant %s: open /dev/hidraw0: no such device"},
		{"no resource", drivertable.NewResources(), map[string]any{hidbus.PropHidraw: "/dev/hidraw0"}, drivertable.ErrNoResource, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			nub := publish(t, r, devgrant.HIDProviderClass, "hid", c.props)
			g, err := devgrant.Open(t.Context(), c.res, nub)
			require.Nil(t, g)
			var oe *devgrant.OpError
			require.ErrorAs(t, err, &oe)
			if c.is != nil {
				require.ErrorIs(t, err, c.is)
			}
			if c.text != "" {
				require.Equal(t, fmt.Sprintf(c.text, nub), err.Error())
			}
		})
	}
}

// The daemon's sg opener decides: a transport that is not a kernel node is
// served; an opener's failure is the grant's.
func TestGrantSGOpenerFails(t *testing.T) {
	leaktest.Check(t)
	res := drivertable.NewResources()
	drivertable.Provide(res, sg.OpenerKey, func() (sg.Opener, error) {
		return func(path string) (scsi.Transport, error) { return scsi.OpenSG(path) }, nil
	})
	r := newRegistry(t)
	nub := publish(t, r, devgrant.SCSIProviderClass, "0:0:0:0", map[string]any{sg.PropSGNode: "/dev/null", sg.PropType: 0})
	_, err := devgrant.Open(t.Context(), res, nub)
	require.ErrorIs(t, err, scsi.ErrNotSG, "/dev/null does not speak sg v3")
}
