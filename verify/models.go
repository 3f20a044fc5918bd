package verify

import (
	"fmt"
	"sort"
	"sync"
)

var (
	modelsMu sync.Mutex
	models   = map[string]func() Device{
		"usb-storage":  func() Device { return USBMassStorage() },
		"scsi-disk":    func() Device { return &SCSIDisk{} },
		"hid-keyboard": func() Device { return &HIDKeyboard{} },
	}
)

// RegisterModel adds a named device model (what `drvctl verify --device`
// names). A name registered twice is refused.
func RegisterModel(name string, make func() Device) error {
	modelsMu.Lock()
	defer modelsMu.Unlock()
	if _, ok := models[name]; ok || name == "" || make == nil {
		return fmt.Errorf("device model %q: empty or registered twice", name)
	}
	models[name] = make
	return nil
}

// Models returns the registered device models by name.
func Models() map[string]func() Device {
	modelsMu.Lock()
	defer modelsMu.Unlock()
	out := make(map[string]func() Device, len(models))
	for k, v := range models {
		out[k] = v
	}
	return out
}

// ModelNames lists the registered models, sorted.
func ModelNames() []string {
	var out []string
	for n := range Models() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
