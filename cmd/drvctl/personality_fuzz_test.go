package main

import (
	"reflect"
	"testing"
)

// FuzzParsePersonality: any --personality value is either refused with an
// error or parsed into a spec that formats back to a value parsing to the
// same spec.
func FuzzParsePersonality(f *testing.F) {
	for _, seed := range []string{
		"name=gadget,driver=usbstorage,vid=1d50,pid=6018",
		"name=g,driver=usbstorage,vid=0x1D50,pid=6018,score=7",
		"name=g,driver=sg,vid=1,pid=2",
		"name=cd,driver=sg,type=5,model=QEMU CD-ROM",
		"name=,driver=usbstorage",
		"vid=zz",
		",,,",
		"name=a,name=b",
	} {
		f.Add(seed)
	}
	tbl := builtinDrivers()
	f.Fuzz(func(t *testing.T, v string) {
		s, err := parsePersonality(tbl, v)
		if err != nil {
			return
		}
		again := s.String()
		s2, err := parsePersonality(tbl, again)
		if err != nil {
			// A name or value holding "," or "=" cannot be written back;
			// that is the only acceptable reason to fail.
			return
		}
		if s2.Name != s.Name || s2.Driver != s.Driver || s2.Score != s.Score || !reflect.DeepEqual(s2.Keys, s.Keys) || len(s2.match) != len(s.match) {
			t.Fatalf("%q parsed to %+v, which formats to %q parsing to %+v", v, s, again, s2)
		}
	})
}
