package devgrant

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
)

// FuzzMessage feeds one packet to the decoders of both ends: the daemon's
// (the header, then the request body through the class's handler, against
// in-memory devices, with a context already ended so that nothing waits)
// and the driver's (the reply bodies: errors, SCSI results, HID info, USB
// descriptors). Nothing may panic, and what is accepted must be within the
// protocol's bounds. Seeds: testdata/fuzz/FuzzMessage.
func FuzzMessage(f *testing.F) {
	f.Add(appendHeader(nil, opHIDRead, 1))
	f.Add(binary.LittleEndian.AppendUint32(appendHeader(nil, opHIDRead, 2), 64))
	f.Add(append(appendHeader(nil, opHIDWrite, 3), 0, 1))
	f.Add(append(appendHeader(nil, opHIDGetFeature, 4), 3, 8, 0, 0, 0))
	inq, _ := appendSGRequest(appendHeader(nil, opSGExecute, 5), &scsi.Command{CDB: []byte{0x12, 0, 0, 0, 36, 0}, Dir: scsi.DirIn, Data: make([]byte, 36)})
	f.Add(inq)
	wr, _ := appendSGRequest(appendHeader(nil, opSGExecute, 6), &scsi.Command{CDB: []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}, Dir: scsi.DirOut, Data: make([]byte, 512)})
	f.Add(wr)
	f.Add(append(appendHeader(nil, opUSBBulk, 7), 0x81, 13, 0, 0, 0))
	f.Add(append(appendHeader(nil, opUSBControl, 8), 0xa1, 0xfe, 0, 0, 0, 0, 1, 0, 0, 0))
	f.Add(append(appendHeader(nil, opUSBClaim, 9), 0, 0))
	f.Add(appendError(appendHeader(nil, opError, 10), codeNoDevice, ""))
	f.Add(append(appendHeader(nil, opReply, 11), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))

	hb := hidsim.New()
	hb.Plug("/dev/hidraw0", hidsim.Spec{Info: hid.Info{Bus: 3, Vendor: 1, Product: 2}}).SetFeatureReport(3, []byte{3, 1, 2})
	hdev, err := hb.Open("/dev/hidraw0")
	if err != nil {
		f.Fatal(err)
	}
	defer hdev.Close()
	sgT := scsisim.NewTransport(scsisim.NewDisk(64, 512))
	ub := usbsim.New()
	defer ub.Close()
	_, _ = ub.PlugMassStorage(usbsim.DeviceSpec{Bus: 1, Address: 2}, scsisim.NewDisk(64, 512))
	udev, err := ub.Open(context.Background(), usb.Selector{Bus: 1, Address: 2})
	if err != nil {
		f.Fatal(err)
	}
	defer udev.Close()
	handlers := map[byte]handler{}
	for op := byte(0x10); op < 0x20; op++ {
		handlers[op] = hidHandler(hdev)
	}
	handlers[opSGExecute] = sgHandler(sgT)
	for op := byte(0x30); op < 0x40; op++ {
		handlers[op] = usbHandler(udev, 0, 0)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()

	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := parseMessage(p)
		if err != nil {
			if len(p) >= headerLen && len(p) <= maxMessage && p[0] == ProtocolVersion {
				t.Fatalf("refused a well-formed header: %v", err)
			}
		} else {
			if m.op != p[1] || m.id != binary.LittleEndian.Uint32(p[2:]) || len(m.body) != len(p)-headerLen {
				t.Fatalf("header decoded wrong: %+v", m)
			}
			if h := handlers[m.op]; h != nil {
				out, err := h(done, m.op, append([]byte(nil), m.body...), appendHeader(nil, opReply, m.id))
				if err == nil && len(out) > headerLen+sgReplyHead+MaxData+255 {
					t.Fatalf("reply of %d bytes", len(out))
				}
			}
		}
		// The driver's decoders, on the packet as a reply body.
		if code, text, err := parseError(p); err == nil && len(text) > maxErrorText {
			t.Fatalf("error text of %d bytes (code %d)", len(text), code)
		}
		if res, err := parseSGReply(p, make([]byte, 64)); err == nil && len(res.Sense) > 255 {
			t.Fatalf("sense of %d bytes", len(res.Sense))
		}
		if _, _, err := parseSGRequest(p); err == nil && len(p) > maxMessage {
			t.Fatalf("accepted a request of %d bytes", len(p))
		}
		if info, err := parseUSBDescriptors(p, len(p)&1); err == nil {
			for _, i := range info.Interfaces {
				if len(i.Endpoints) > len(p)/7 {
					t.Fatalf("%d endpoints from %d bytes", len(i.Endpoints), len(p))
				}
			}
		}
		_ = sgCodes.decode(byte(len(p)), string(p))
	})
}
