package usbhold

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

// Holds reports whether p takes part in the hold: a personality of
// USBInterface nubs, which claims its interface through usbfs. A
// personality of any class ("") is not assumed to be a USB driver.
func Holds(p *driver.Personality) bool { return p.ProviderClass == usbbus.ClassInterface }

// Claimant returns the name of the personality of ps that holds (see
// [Holds]) and matches an interface nub with props, as the registry would
// match it, with the highest score (the first of equals); "" for none.
// Probe may still change scores: the name is what logs say, the decision
// is that some personality matches.
func Claimant(ps []driver.Personality, props driver.Properties) string {
	best := -1
	for i := range ps {
		if Holds(&ps[i]) && ps[i].Matches(usbbus.ClassInterface, props) && (best < 0 || ps[i].Score > ps[best].Score) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return ps[best].Name
}

// InterfaceProperties are the properties the USB bus adapter publishes on
// the nub of an interface's add event: what personalities match on.
func InterfaceProperties(ev *hotplug.Event) (driver.Properties, error) {
	nub, err := usbbus.New().Describe(&hotplug.DeviceInfo{Event: *ev})
	if err != nil {
		return driver.Properties{}, err
	}
	if nub.Class != usbbus.ClassInterface {
		return driver.Properties{}, fmt.Errorf("%s is a %s, not an interface", ev.DevPath, nub.Class)
	}
	return driver.NewProperties(nub.Properties), nil
}

// Rule is what one personality holds: the keys its matches compare.
type Rule struct {
	Personality string
	Score       int
	Keys        []Key
	// Func: a match function decides too, known only at plug time.
	Func bool
}

// Key is one compared property: Value, under Mask when Mask is not 0.
type Key struct {
	Prop  string
	Value any
	Mask  uint64
}

func (k Key) String() string {
	v := k.Value
	switch n := v.(type) {
	case uint64, int64, int, uint, uint8, uint16, uint32, int8, int16, int32:
		w := 4
		if strings.HasPrefix(k.Prop, "bInterface") {
			w = 2
		}
		s := fmt.Sprintf("%s=0x%0*x", k.Prop, w, n)
		if k.Mask != 0 {
			s += fmt.Sprintf("/0x%0*x", w, k.Mask)
		}
		return s
	}
	return fmt.Sprintf("%s=%q", k.Prop, fmt.Sprint(v))
}

// Rules lists what the holding personalities of ps hold, in their order.
func Rules(ps []driver.Personality) []Rule {
	var out []Rule
	for i := range ps {
		p := &ps[i]
		if !Holds(p) {
			continue
		}
		r := Rule{Personality: p.Name, Score: p.Score}
		for _, m := range p.Match {
			if m.Func != nil {
				r.Func = true
				continue
			}
			r.Keys = append(r.Keys, Key{Prop: m.Key, Value: m.Value, Mask: m.Mask})
		}
		sort.SliceStable(r.Keys, func(a, b int) bool { return keyOrder(r.Keys[a].Prop) < keyOrder(r.Keys[b].Prop) })
		out = append(out, r)
	}
	return out
}

// keyOrder lists USB ids before interface fields, as lsusb reads.
func keyOrder(prop string) int {
	for i, k := range []string{usbbus.PropVendorID, usbbus.PropProductID, usbbus.PropIfaceClass, usbbus.PropIfaceSub, usbbus.PropIfaceProto, usbbus.PropIfaceNumber} {
		if k == prop {
			return i
		}
	}
	return 100
}

func (r Rule) String() string {
	parts := make([]string, 0, len(r.Keys)+1)
	for _, k := range r.Keys {
		parts = append(parts, k.String())
	}
	if r.Func {
		parts = append(parts, "(and a match function, decided at plug)")
	}
	if len(parts) == 0 {
		parts = append(parts, "(every interface)")
	}
	return fmt.Sprintf("%s score=%d: %s", r.Personality, r.Score, strings.Join(parts, " "))
}

// WriteRules writes one line per rule; "none" when no personality holds.
func WriteRules(w io.Writer, rules []Rule) error {
	if len(rules) == 0 {
		_, err := fmt.Fprintln(w, "none: no personality on USBInterface nubs is loaded, no gate")
		return err
	}
	for _, r := range rules {
		if _, err := fmt.Fprintln(w, r); err != nil {
			return err
		}
	}
	return nil
}
