package usbsim_test

import (
	"context"
	"testing"

	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
)

type nopTarget struct{}

func (nopTarget) Execute(cdb, out, in []byte) (int, uint8, []byte) { return len(in), 0, nil }

// FuzzMassStorageCBW feeds arbitrary bytes to the device's CBW parser; it
// must never panic, and after reset recovery the device answers a valid
// command again.
func FuzzMassStorageCBW(f *testing.F) {
	f.Fuzz(func(t *testing.T, cbw []byte) {
		ctx := context.Background()
		b := usbsim.New()
		defer b.Close()
		b.PlugMassStorage(usbsim.DeviceSpec{Bus: 1, Address: 1, Vendor: 1, Product: 1}, nopTarget{})
		h, err := b.Open(ctx, usb.Selector{Bus: 1, Address: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.ClaimInterface(ctx, 0, 0); err != nil {
			t.Fatal(err)
		}
		h.BulkTransfer(ctx, usbsim.MassStorageOut, cbw)
		// Reset recovery, then a TEST UNIT READY.
		if _, err := h.Control(ctx, 0x21, 0xff, 0, 0, nil); err != nil {
			t.Fatal(err)
		}
		for _, ep := range []uint8{usbsim.MassStorageIn, usbsim.MassStorageOut} {
			if err := h.ClearHalt(ctx, ep); err != nil {
				t.Fatal(err)
			}
		}
		good := []byte("USBC\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
		if _, err := h.BulkTransfer(ctx, usbsim.MassStorageOut, good); err != nil {
			t.Fatalf("CBW after recovery: %v", err)
		}
		csw := make([]byte, 13)
		if n, err := h.BulkTransfer(ctx, usbsim.MassStorageIn, csw); err != nil || n != 13 || csw[4] != 2 || csw[12] != 0 {
			t.Fatalf("CSW after recovery: %x, %v", csw[:n], err)
		}
	})
}
