//go:build linux && cgo

package usb

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// sysfsUSBDrivers is where the kernel's USB drivers take bind requests.
var sysfsUSBDrivers = "/sys/bus/usb/drivers"

// interfaceName is the kernel's name of an interface: "BUS-PORT.PORT:CONFIG.IFACE".
func interfaceName(info DeviceInfo, iface int) string {
	ports := make([]string, len(info.Port))
	for i, p := range info.Port {
		ports[i] = strconv.Itoa(p)
	}
	return fmt.Sprintf("%d-%s:%d.%d", info.Bus, strings.Join(ports, "."), info.Config, iface)
}

// BindKernelDriver binds driver to interface iface of the device sel picks
// by writing the interface's name to the driver's sysfs bind file
// (KernelBinder): how a restarted daemon gives back an interface its
// killed predecessor had detached.
func (b *Gousb) BindKernelDriver(ctx context.Context, sel Selector, iface int, driver string) error {
	op := fmt.Sprintf("bind %s to %s interface %d", driver, sel, iface)
	devs, err := b.Devices(ctx)
	if err != nil {
		return err
	}
	for _, info := range devs {
		if !sel.Matches(info) {
			continue
		}
		if len(info.Port) == 0 || info.Config <= 0 || strings.ContainsAny(driver, "/\x00") || driver == "" {
			return &OpError{Op: op, Err: ErrNotSupported}
		}
		name := interfaceName(info, iface)
		if _, err := os.Stat(filepath.Join(sysfsUSBDrivers, driver, name)); err == nil {
			return &OpError{Op: op, Err: ErrBound}
		}
		if err := os.WriteFile(filepath.Join(sysfsUSBDrivers, driver, "bind"), []byte(name), 0); err != nil {
			return &OpError{Op: op, Err: err}
		}
		return nil
	}
	return &OpError{Op: op, Err: ErrNotFound}
}

var _ KernelBinder = (*Gousb)(nil)
