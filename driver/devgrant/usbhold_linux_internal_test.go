//go:build linux

package devgrant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// holdLike is a wrapper like hotplug/usbhold's (which this package does
// not import): it must ready a claim, records it, and may fail.
type holdLike struct {
	usb.Backend
	log *[]string
	err error
}

func (h *holdLike) Unwrap() usb.Backend { return h.Backend }

func (h *holdLike) ReadyClaim(_ context.Context, bus, addr, iface int) error {
	*h.log = append(*h.log, fmt.Sprintf("ready %s %d", USBNode(bus, addr), iface))
	return h.err
}

// A USB interface behind the USB hold's wrapper, on the kernel's backend,
// is granted as usbfs (not served over the daemon's socket): the wrapper
// readies the claim (the hold authorizes the interface it kept) before
// the claim is made on the granted descriptor, the journal under the
// wrapper gets the detach. A failure to ready, or a device that is not
// there any more, refuses the grant with the cause — an unplugged device
// says usb.ErrNoDevice.
func TestGrantUsbfsUnderTheHold(t *testing.T) {
	leaktest.Check(t)
	j, err := usb.OpenJournal(filepath.Join(t.TempDir(), "usb-detached.json"))
	require.NoError(t, err)
	var log []string
	hold := &holdLike{Backend: j.Wrap(new(usb.Gousb)), log: &log}
	res := drivertable.NewResources()
	drivertable.Provide(res, USBKey, func() (usb.Backend, error) { return hold, nil })

	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
	})
	dev := r.NewNub("USBDevice", "3-1", driver.NewProperties(map[string]any{propBusNum: 3, propDevNum: 7}))
	require.NoError(t, r.Publish(nil, dev))
	nub := r.NewNub(USBProviderClass, "3-1:1.0", driver.NewProperties(map[string]any{propInterface: 0}))
	require.NoError(t, r.Publish(dev, nub))

	// The kernel's usbfs, as far as the order goes.
	released := false
	grantUsbfsFunc = func(gj *usb.Journal, bus, addr, iface int) (File, func() error, error) {
		log = append(log, "claim "+USBNode(bus, addr))
		require.Same(t, j, gj, "the journal under the hold's wrapper")
		f, err := os.Open(os.DevNull)
		require.NoError(t, err)
		return File{Resource: USBKey.Name(), Node: USBNode(bus, addr), Kind: KindUsbfs, File: f}, func() error {
			released = true
			return nil
		}, nil
	}
	t.Cleanup(func() { grantUsbfsFunc = grantUsbfs })
	g, err := Open(context.Background(), res, nub)
	require.NoError(t, err)
	require.Len(t, g.Files, 1)
	require.Equal(t, KindUsbfs, g.Files[0].Kind)
	require.Equal(t, "/dev/bus/usb/003/007", g.Files[0].Node)
	require.Equal(t, []string{"ready /dev/bus/usb/003/007 0", "claim /dev/bus/usb/003/007"}, log, "readied, then claimed")
	require.NoError(t, g.Close())
	require.True(t, released)

	// The hold could not ready it: no claim, the cause is said.
	log = nil
	hold.err = errors.New("device 3-1 not configured by the kernel: context deadline exceeded")
	_, err = Open(context.Background(), res, nub)
	require.ErrorContains(t, err, "not configured")
	require.Equal(t, []string{"ready /dev/bus/usb/003/007 0"}, log)

	// The real usbfs, with the device unplugged (its node is gone): the
	// grant says ErrNoDevice, not a transport error.
	grantUsbfsFunc = grantUsbfs
	hold.err = nil
	gone := r.NewNub("USBDevice", "3-2", driver.NewProperties(map[string]any{propBusNum: 255, propDevNum: 255}))
	require.NoError(t, r.Publish(nil, gone))
	nub2 := r.NewNub(USBProviderClass, "3-2:1.0", driver.NewProperties(map[string]any{propInterface: 0}))
	require.NoError(t, r.Publish(gone, nub2))
	_, err = Open(context.Background(), res, nub2)
	require.ErrorIs(t, err, usb.ErrNoDevice)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "grant", oe.Op)
}
