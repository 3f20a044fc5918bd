package usbhold

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/usb"
)

func TestInterfaceName(t *testing.T) {
	for _, tc := range []struct {
		info usb.DeviceInfo
		num  int
		want string
	}{
		{usb.DeviceInfo{Bus: 2, Port: []int{1}, Config: 1}, 0, "2-1:1.0"},
		{usb.DeviceInfo{Bus: 3, Port: []int{1, 4, 2}, Config: 2}, 13, "3-1.4.2:2.13"},
		{usb.DeviceInfo{Bus: 2, Config: 1}, 0, ""},
		{usb.DeviceInfo{Bus: 2, Port: []int{1}}, 0, ""},
		{usb.DeviceInfo{Port: []int{1}, Config: 1}, 0, ""},
		{usb.DeviceInfo{Bus: 2, Port: []int{1}, Config: 1}, -1, ""},
		{usb.DeviceInfo{Bus: 2, Port: []int{-1}, Config: 1}, 0, ""},
	} {
		got, ok := InterfaceName(tc.info, tc.num)
		require.Equal(t, tc.want != "", ok, "%+v", tc.info)
		require.Equal(t, tc.want, got)
	}
}

// fakeUSB is a backend of one device whose claims go to the fake kernel.
type fakeUSB struct {
	usb.Backend
	k    *fakeKernel
	info usb.DeviceInfo
}

func (b *fakeUSB) Open(context.Context, usb.Selector) (usb.Device, error) {
	return &fakeUSBDevice{k: b.k, info: b.info}, nil
}

type fakeUSBDevice struct {
	usb.Device
	k    *fakeKernel
	info usb.DeviceInfo
}

func (d *fakeUSBDevice) Info() usb.DeviceInfo { return d.info }
func (d *fakeUSBDevice) ClaimInterface(_ context.Context, num, _ int) error {
	name, _ := InterfaceName(d.info, num)
	return d.k.claim(name)
}

// Through Wrap, a driver's claim of a held interface works as on any
// other: the hold authorizes it first.
func TestWrapClaims(t *testing.T) {
	k := newFakeKernel("usb2")
	ps := &personalities{}
	ps.set(storagePersonality(nil))
	h, _ := newTestHold(t, k, filepath.Join(t.TempDir(), "s.json"), ps)
	defer h.Close()
	require.NoError(t, h.Sync())
	ev := k.plug(t, "2-1:1.0", 2, 3, 0x46f4, 1, stick, "usb-storage")
	h.Event(&ev)

	raw := &fakeUSB{k: k, info: usb.DeviceInfo{Bus: 2, Address: 3, Port: []int{1}, Config: 1}}
	dev, err := raw.Open(context.Background(), usb.Selector{Bus: 2, Address: 3})
	require.NoError(t, err)
	require.Error(t, dev.ClaimInterface(context.Background(), 0, 0), "unwrapped, the claim of a held interface fails")

	b := h.Wrap(raw)
	dev, err = b.Open(context.Background(), usb.Selector{Bus: 2, Address: 3})
	require.NoError(t, err)
	require.NoError(t, dev.ClaimInterface(context.Background(), 0, 0))
	_, drv := k.state("2-1:1.0")
	require.Equal(t, "usbfs", drv)
	require.ErrorIs(t, b.(usb.KernelBinder).BindKernelDriver(context.Background(), usb.Selector{Bus: 2, Address: 3}, 0, "usb-storage"), usb.ErrNotSupported)
}
