package hidsim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/drvkit/drvkit/driver/hid"
)

// PlugSysfs plugs the hidraw node of the HID device at devpath in a sysfs
// tree (the simulator's mirror), with the identity (HID_ID) and report
// descriptor sysfs gives it, unless a device is already plugged at that
// node. It returns the device, or nil if the HID device has no hidraw
// node. A simulated bus calls it when it sees the HID device's add or its
// hidraw node's: the node exists as soon as sysfs shows it, before its
// uevent is handled, as /dev/hidrawN does on a real machine.
func (b *Backend) PlugSysfs(root, devpath string) (*Device, error) {
	dir := filepath.Join(root, devpath)
	ents, err := os.ReadDir(filepath.Join(dir, "hidraw"))
	if err != nil || len(ents) == 0 {
		return nil, nil
	}
	node := "/dev/" + ents[0].Name()
	b.mu.Lock()
	d := b.devs[node]
	b.mu.Unlock()
	if d != nil {
		return d, nil
	}
	var spec Spec
	if spec.Descriptor, err = os.ReadFile(filepath.Join(dir, "report_descriptor")); err != nil {
		return nil, fmt.Errorf("plug %s: %w", node, err)
	}
	ue, err := os.ReadFile(filepath.Join(dir, "uevent"))
	if err != nil {
		return nil, fmt.Errorf("plug %s: %w", node, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(ue))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "HID_ID="); ok {
			var bus, ven, pro uint32
			if _, err := fmt.Sscanf(v, "%x:%x:%x", &bus, &ven, &pro); err == nil {
				spec.Info = hid.Info{Bus: bus, Vendor: uint16(ven), Product: uint16(pro)}
			}
		}
	}
	return b.Plug(node, spec), nil
}
