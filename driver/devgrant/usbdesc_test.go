package devgrant

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/usb"
)

func TestParseUSBDescriptors(t *testing.T) {
	dev, _ := hex.DecodeString("12010002000000" + "40" + "f4460100000101020302")
	cfg1, _ := hex.DecodeString("090220000101008032" + "090400000208065000" + "07058102000200" + "07050202000200")
	cfg2, _ := hex.DecodeString("090219000102008032" + "090400000103010100" + "07058303080001")
	stick := usb.Interface{Number: 0, Class: 8, SubClass: 6, Protocol: 0x50, Endpoints: []usb.Endpoint{
		{Address: 0x81, Type: usb.TransferBulk, MaxPacketSize: 512}, {Address: 0x02, Type: usb.TransferBulk, MaxPacketSize: 512}}}
	kbd := usb.Interface{Number: 0, Class: 3, SubClass: 1, Protocol: 1, Endpoints: []usb.Endpoint{
		{Address: 0x83, Type: usb.TransferInterrupt, MaxPacketSize: 8}}}
	all := append(append(dev, cfg1...), cfg2...)
	for _, c := range []struct {
		name   string
		in     []byte
		config int
		want   usb.DeviceInfo
		err    bool
	}{
		{name: "first configuration", in: all, want: usb.DeviceInfo{Vendor: 0x46f4, Product: 1, Config: 1, Interfaces: []usb.Interface{stick}}},
		{name: "active second", in: all, config: 2, want: usb.DeviceInfo{Vendor: 0x46f4, Product: 1, Config: 2, Interfaces: []usb.Interface{kbd}}},
		{name: "device only", in: dev, want: usb.DeviceInfo{Vendor: 0x46f4, Product: 1}},
		{name: "short", in: dev[:10], err: true},
		{name: "not a device descriptor", in: append([]byte{18, 2}, dev[2:]...), err: true},
		{name: "configuration longer than the data", in: append(append([]byte(nil), dev...), cfg1[:20]...), err: true},
		{name: "zero-length descriptor", in: append(append(append([]byte(nil), dev...), cfg1[:9]...), make([]byte, 23)...), err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			info, err := parseUSBDescriptors(c.in, c.config)
			if c.err {
				require.ErrorIs(t, err, ErrProtocol)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, info)
		})
	}
}
