package devgrant

import (
	"encoding/binary"
	"fmt"

	"github.com/drvkit/drvkit/driver/usb"
)

// parseUSBDescriptors decodes what read(2) on a usbfs node returns: the
// device descriptor, then each configuration descriptor with its
// interfaces and endpoints. Interfaces are those of configuration config
// (its bConfigurationValue), or of the first when config is 0 or absent.
func parseUSBDescriptors(b []byte, config int) (usb.DeviceInfo, error) {
	var info usb.DeviceInfo
	if len(b) < 18 || b[0] < 18 || int(b[0]) > len(b) || b[1] != 1 {
		return info, fmt.Errorf("%w: no device descriptor", ErrProtocol)
	}
	info.Class, info.SubClass, info.Protocol = b[4], b[5], b[6]
	info.Vendor = binary.LittleEndian.Uint16(b[8:])
	info.Product = binary.LittleEndian.Uint16(b[10:])
	ncfg := int(b[17])
	rest := b[b[0]:]
	for range ncfg {
		if len(rest) < 9 || rest[1] != 2 {
			break
		}
		total := int(binary.LittleEndian.Uint16(rest[2:]))
		if total < 9 || total > len(rest) || int(rest[0]) > total {
			return info, fmt.Errorf("%w: configuration of %d bytes in %d", ErrProtocol, total, len(rest))
		}
		cfg := rest[:total]
		rest = rest[total:]
		value := int(cfg[5])
		if config != 0 && config != value {
			continue
		}
		info.Config = value
		info.Interfaces = nil
		cur := -1
		for d := cfg[cfg[0]:]; len(d) >= 2; {
			n := int(d[0])
			if n < 2 || n > len(d) {
				return info, fmt.Errorf("%w: descriptor of %d bytes in %d", ErrProtocol, n, len(d))
			}
			switch {
			case d[1] == 4 && n >= 9: // interface
				info.Interfaces = append(info.Interfaces, usb.Interface{Number: int(d[2]), Alternate: int(d[3]),
					Class: d[5], SubClass: d[6], Protocol: d[7]})
				cur = len(info.Interfaces) - 1
			case d[1] == 5 && n >= 7 && cur >= 0: // endpoint
				info.Interfaces[cur].Endpoints = append(info.Interfaces[cur].Endpoints, usb.Endpoint{Address: d[2], Type: usb.TransferType(d[3] & 3),
					MaxPacketSize: int(binary.LittleEndian.Uint16(d[4:]) & 0x7ff)})
			}
			d = d[n:]
		}
		return info, nil
	}
	return info, nil
}
