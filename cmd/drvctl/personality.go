package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

// personalitySpec is one --personality flag: a driver's constructor
// registered under a VID:PID match, as an IOKit personality names a
// product. It serves devices whose interfaces do not advertise the class
// the driver's own personality matches (a vendor-specific interface that
// speaks bulk-only all the same), or picks this driver over another one
// for a known product: its score beats the class match.
type personalitySpec struct {
	Name     string
	Driver   string
	Vendor   uint16
	Product  uint16
	Score    int
	hasScore bool
}

// defaultPersonalityScore is above the class-matching personalities'
// (score 0): a product match is more specific than a class match.
const defaultPersonalityScore = 100

// personalityFlags collects repeated --personality flags.
type personalityFlags []personalitySpec

func (p *personalityFlags) String() string {
	var parts []string
	for _, s := range *p {
		parts = append(parts, s.String())
	}
	return strings.Join(parts, " ")
}

func (p *personalityFlags) Set(v string) error {
	s, err := parsePersonality(v)
	if err != nil {
		return err
	}
	for _, o := range *p {
		if o.Name == s.Name {
			return fmt.Errorf("personality %q given twice", s.Name)
		}
	}
	*p = append(*p, s)
	return nil
}

func (s personalitySpec) String() string {
	return fmt.Sprintf("name=%s,driver=%s,vid=%04x,pid=%04x,score=%d", s.Name, s.Driver, s.Vendor, s.Product, s.Score)
}

// parsePersonality parses "name=N,driver=D,vid=VVVV,pid=PPPP[,score=S]";
// vid and pid are hex, as lsusb prints them.
func parsePersonality(v string) (personalitySpec, error) {
	s := personalitySpec{Score: defaultPersonalityScore}
	seen := map[string]bool{}
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || val == "" {
			return s, fmt.Errorf("personality %q: %q is not key=value", v, kv)
		}
		if seen[k] {
			return s, fmt.Errorf("personality %q: %s given twice", v, k)
		}
		seen[k] = true
		switch k {
		case "name":
			s.Name = val
		case "driver":
			s.Driver = val
		case "vid", "pid":
			n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(val), "0x"), 16, 16)
			if err != nil {
				return s, fmt.Errorf("personality %q: %s %q is not a 16-bit hex number", v, k, val)
			}
			if k == "vid" {
				s.Vendor = uint16(n)
			} else {
				s.Product = uint16(n)
			}
		case "score":
			n, err := strconv.Atoi(val)
			if err != nil {
				return s, fmt.Errorf("personality %q: score %q is not an integer", v, val)
			}
			s.Score, s.hasScore = n, true
		default:
			return s, fmt.Errorf("personality %q: unknown key %q (want name, driver, vid, pid, score)", v, k)
		}
	}
	for _, k := range []string{"name", "driver", "vid", "pid"} {
		if !seen[k] {
			return s, fmt.Errorf("personality %q: %s is required", v, k)
		}
	}
	switch s.Driver {
	case usbstorage.Name:
	default:
		return s, fmt.Errorf("personality %q: driver %q cannot be matched by VID:PID (have %s)", v, s.Driver, usbstorage.Name)
	}
	if s.Name == usbstorage.Name || s.Name == "sg" {
		return s, fmt.Errorf("personality %q: name %q is a built-in driver's", v, s.Name)
	}
	return s, nil
}

// personality builds the registry personality: base is the driver's own
// (its constructor and instance class), matched on the USBInterface nubs
// of that product instead of its class.
func (s personalitySpec) personality(base driver.Personality) driver.Personality {
	p := base
	p.Name = s.Name
	p.Score = s.Score
	p.Match = []driver.Match{
		driver.MatchValue(usbbus.PropVendorID, uint64(s.Vendor)),
		driver.MatchValue(usbbus.PropProductID, uint64(s.Product)),
	}
	return p
}
