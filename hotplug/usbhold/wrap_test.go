package usbhold

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// A claim made beside the wrapped backend — package devgrant claims on a
// usbfs descriptor it opens itself and hands to a driver process — is
// readied through usb.ReadyClaim by bus, address and interface number; the
// journal below the hold and the kernel's backend at the bottom stay
// visible through Unwrap. Released, the interface goes back to the kernel.
func TestReadyClaimBeside(t *testing.T) {
	k := newFakeKernel("usb2")
	ps := &personalities{}
	ps.set(storagePersonality(nil))
	h, _ := newTestHold(t, k, filepath.Join(t.TempDir(), "s.json"), ps)
	defer h.Close()
	require.NoError(t, h.Sync())
	ev := k.plug(t, "2-1:1.0", 2, 3, 0x46f4, 1, stick, "usb-storage")
	h.Event(&ev)
	ev = k.plug(t, "2-1:1.1", 2, 3, 0x46f4, 1, keyboard, "usbhid")
	h.Event(&ev)

	j, err := usb.OpenJournal(filepath.Join(t.TempDir(), "j.json"))
	require.NoError(t, err)
	raw := &fakeUSB{k: k, info: usb.DeviceInfo{Bus: 2, Address: 3, Port: []int{1}, Config: 1}}
	b := h.Wrap(j.Wrap(raw))
	require.Same(t, j, usb.JournalOf(b), "the journal under the hold")
	require.Equal(t, usb.Backend(raw), usb.Innermost(b))

	require.Error(t, k.claim("2-1:1.0"), "held: usbfs refuses the claim until it is readied")
	ctx := context.Background()
	require.NoError(t, usb.ReadyClaim(ctx, b, 2, 3, 0))
	require.NoError(t, k.claim("2-1:1.0"))
	_, drv := k.state("2-1:1.0")
	require.Equal(t, "usbfs", drv)
	require.Equal(t, []string{"2-1:1.0"}, heldNames(h), "held until given back")

	// Not held (the kernel's already), another device, a device gone:
	// nothing to do, and no error — the claim says what happened.
	require.NoError(t, usb.ReadyClaim(ctx, b, 2, 3, 1))
	_, drv = k.state("2-1:1.1")
	require.Equal(t, "usbhid", drv)
	require.NoError(t, usb.ReadyClaim(ctx, b, 2, 9, 0))
	require.NoError(t, usb.ReadyClaim(ctx, b, 1, 3, 0))

	// The grant released its claim: given back, the kernel's driver binds.
	k.release("2-1:1.0")
	require.NoError(t, h.GiveBack("2-1:1.0"))
	_, drv = k.state("2-1:1.0")
	require.Equal(t, "usb-storage", drv)
	require.Empty(t, heldNames(h))

	// Unplugged before the claim: readied without error, the claim fails
	// as the kernel's does for a vanished interface (ENODEV → ErrNoDevice).
	ev = k.plug(t, "2-2:1.0", 2, 4, 0x46f4, 1, stick, "usb-storage")
	h.Event(&ev)
	k.mu.Lock()
	delete(k.ifaces, "2-2:1.0")
	delete(k.devices, "2-2")
	k.mu.Unlock()
	require.NoError(t, usb.ReadyClaim(ctx, b, 2, 4, 0))
	require.ErrorIs(t, k.claim("2-2:1.0"), os.ErrNotExist)

	// A failure to ready stops the claim: it is returned.
	ev = k.plug(t, "2-3:1.0", 2, 5, 0x46f4, 1, stick, "usb-storage")
	h.Event(&ev)
	k.mu.Lock()
	k.devices["2-3"] = "" // never configured
	k.mu.Unlock()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, usb.ReadyClaim(tctx, b, 2, 5, 0), context.DeadlineExceeded)
}

func heldNames(h *Hold) []string {
	var out []string
	for _, x := range h.Held() {
		out = append(out, x.Interface)
	}
	return out
}
