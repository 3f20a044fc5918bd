package bundle

import (
	"fmt"
	"sort"
)

// keySpec is a match key of a provider class: the nub property it
// compares and its kind (an unsigned integer of bits bits, or a string).
type keySpec struct {
	prop string
	bits int // 0: a string
}

// The nub properties; the sample drivers' packages declare the same names
// (checked by TestPropsAgree) but are not imported: a daemon loading
// bundles need not link libusb's driver.
const (
	ClassUSBInterface = "USBInterface"
	ClassSCSIDevice   = "SCSIDevice"
	ClassHIDDevice    = "HIDDevice"
)

// providerKeys are the match keys of each provider class a manifest may
// name. A new nub class adds its keys here.
var providerKeys = map[string]map[string]keySpec{
	ClassUSBInterface: {
		"vid":       {prop: "idVendor", bits: 16},
		"pid":       {prop: "idProduct", bits: 16},
		"class":     {prop: "bInterfaceClass", bits: 8},
		"subclass":  {prop: "bInterfaceSubClass", bits: 8},
		"protocol":  {prop: "bInterfaceProtocol", bits: 8},
		"interface": {prop: "bInterfaceNumber", bits: 8},
	},
	ClassSCSIDevice: {
		"type":   {prop: "type", bits: 5},
		"vendor": {prop: "vendor"},
		"model":  {prop: "model"},
	},
	ClassHIDDevice: {
		"vid":        {prop: "idVendor", bits: 16},
		"pid":        {prop: "idProduct", bits: 16},
		"usage_page": {prop: "primaryUsagePage", bits: 16},
		"usage":      {prop: "primaryUsage", bits: 16},
	},
}

func providerClasses() []string { return sortedKeys(providerKeys) }

func keyNames(keys map[string]keySpec) []string { return sortedKeys(keys) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// parse reads a match value: an integer, {value = N, mask = M} for an
// integer key, or a string for a string key.
func (k keySpec) parse(v any) (Match, error) {
	m := Match{Prop: k.prop}
	if k.bits == 0 {
		s, ok := v.(string)
		if !ok {
			return m, fmt.Errorf("want a string, not %s", tomlType(v))
		}
		m.Value = s
		return m, nil
	}
	max := uint64(1)<<k.bits - 1
	num := func(what string, x any) (uint64, error) {
		n, ok := x.(int64)
		if !ok {
			return 0, fmt.Errorf("%s: want an integer, not %s", what, tomlType(x))
		}
		if n < 0 || uint64(n) > max {
			return 0, fmt.Errorf("%s: %d does not fit in %d bits (0 to %#x)", what, n, k.bits, max)
		}
		return uint64(n), nil
	}
	switch x := v.(type) {
	case int64:
		n, err := num("value", x)
		m.Value = n
		return m, err
	case map[string]any:
		for key := range x {
			if key != "value" && key != "mask" {
				return m, fmt.Errorf("unknown key %q (want value and mask)", key)
			}
		}
		val, ok := x["value"]
		if !ok {
			return m, fmt.Errorf("value: missing")
		}
		n, err := num("value", val)
		if err != nil {
			return m, err
		}
		m.Value = n
		if mk, ok := x["mask"]; ok {
			if m.Mask, err = num("mask", mk); err != nil {
				return m, err
			}
			if m.Mask == 0 {
				return m, fmt.Errorf("mask: 0 would match everything")
			}
		}
		return m, nil
	}
	return m, fmt.Errorf("want an integer or {value, mask}, not %s", tomlType(v))
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	}
	return fmt.Sprintf("a %T", v)
}
