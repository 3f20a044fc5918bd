//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/drvkit/drvkit/e2e/agentproto"
)

const gadgetRoot = "/sys/kernel/config/usb_gadget"

// gadgetUp creates a configfs mass-storage gadget and binds it to the first
// free UDC (dummy_hcd's): the host side then sees a new USB device.
func gadgetUp(x agentproto.GadgetArgs) (res *agentproto.GadgetResult, err error) {
	if x.Name == "" || strings.ContainsAny(x.Name, "/.") {
		return nil, fmt.Errorf("gadget: bad name %q", x.Name)
	}
	if x.VID == 0 || x.PID == 0 {
		return nil, errors.New("gadget: vid and pid are required")
	}
	if x.SizeMiB <= 0 {
		x.SizeMiB = 4
	}
	udcs, _ := os.ReadDir("/sys/class/udc")
	if len(udcs) == 0 {
		return nil, errors.New("gadget: no UDC (is dummy_hcd loaded?)")
	}
	udc := udcs[0].Name()
	g := filepath.Join(gadgetRoot, x.Name)
	defer func() {
		if err != nil {
			removeGadget(x.Name)
		}
	}()
	backing := "/tmp/gadget-" + x.Name + ".img"
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(backing, int64(x.SizeMiB)<<20); err != nil {
		return nil, err
	}
	steps := []struct{ mkdir, file, value string }{
		{mkdir: g},
		{file: g + "/idVendor", value: fmt.Sprintf("0x%04x", x.VID)},
		{file: g + "/idProduct", value: fmt.Sprintf("0x%04x", x.PID)},
		{mkdir: g + "/strings/0x409"},
		{file: g + "/strings/0x409/manufacturer", value: or(x.Manufacturer, "drvkit")},
		{file: g + "/strings/0x409/product", value: or(x.Product, "e2e gadget")},
		{file: g + "/strings/0x409/serialnumber", value: or(x.Serial, "E2E0001")},
		{mkdir: g + "/configs/c.1"},
		{mkdir: g + "/configs/c.1/strings/0x409"},
		{file: g + "/configs/c.1/strings/0x409/configuration", value: "mass storage"},
		{mkdir: g + "/functions/mass_storage.0"},
		{file: g + "/functions/mass_storage.0/lun.0/file", value: backing},
	}
	for _, s := range steps {
		if s.mkdir != "" {
			err = os.Mkdir(s.mkdir, 0o755)
		} else {
			err = os.WriteFile(s.file, []byte(s.value+"\n"), 0)
		}
		if err != nil {
			return nil, fmt.Errorf("gadget %s: %w", x.Name, err)
		}
	}
	if err := os.Symlink(g+"/functions/mass_storage.0", g+"/configs/c.1/mass_storage.0"); err != nil {
		return nil, fmt.Errorf("gadget %s: %w", x.Name, err)
	}
	if err := os.WriteFile(g+"/UDC", []byte(udc+"\n"), 0); err != nil {
		return nil, fmt.Errorf("gadget %s: bind to %s: %w", x.Name, udc, err)
	}
	return &agentproto.GadgetResult{UDC: udc}, nil
}

// gadgetOff unbinds the gadget (the host side sees it unplugged) and removes
// it from configfs.
func gadgetOff(name string) error {
	g := filepath.Join(gadgetRoot, name)
	if _, err := os.Stat(g); err != nil {
		return fmt.Errorf("gadget %s: %w", name, err)
	}
	if err := os.WriteFile(g+"/UDC", []byte("\n"), 0); err != nil {
		return fmt.Errorf("gadget %s: unbind: %w", name, err)
	}
	return removeGadget(name)
}

// removeGadget undoes gadgetUp's steps in reverse; configfs needs rmdir of
// each directory it created, children first.
func removeGadget(name string) error {
	g := filepath.Join(gadgetRoot, name)
	var errs []error
	rm := func(p string) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	rm(g + "/configs/c.1/mass_storage.0")
	rm(g + "/configs/c.1/strings/0x409")
	rm(g + "/configs/c.1")
	rm(g + "/functions/mass_storage.0")
	rm(g + "/strings/0x409")
	rm(g)
	os.Remove("/tmp/gadget-" + name + ".img")
	return errors.Join(errs...)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
