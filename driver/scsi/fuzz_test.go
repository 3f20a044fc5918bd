package scsi

import (
	"errors"
	"testing"
	"unicode"
)

func FuzzParseSense(f *testing.F) {
	f.Add(FixedSense(SenseMediumError, 0x11, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSense(b)
		if err != nil {
			if !errors.Is(err, ErrBadSense) {
				t.Fatalf("error %v does not match ErrBadSense", err)
			}
			return
		}
		if s.Key > 0xf {
			t.Fatalf("key %d out of range", s.Key)
		}
		if s.Descriptor != (s.ResponseCode == 0x72 || s.ResponseCode == 0x73) {
			t.Fatalf("descriptor flag %v for code %#x", s.Descriptor, s.ResponseCode)
		}
		// The error text must always render.
		_ = (&SenseError{Op: "X", Sense: s}).Error()
	})
}

func FuzzParseInquiry(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseInquiry(b)
		if err != nil {
			if len(b) >= 5 {
				t.Fatalf("rejected %d bytes: %v", len(b), err)
			}
			return
		}
		for _, s := range []string{d.Vendor, d.Product, d.Revision} {
			if len(s) > 16 {
				t.Fatalf("field %q too long", s)
			}
			for _, r := range s {
				if !unicode.IsPrint(r) || r > 0x7e {
					t.Fatalf("non-printable %q in %q", r, s)
				}
			}
		}
	})
}

func FuzzParseReadCapacity(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, parse := range []func([]byte) (Capacity, error){ParseReadCapacity10, ParseReadCapacity16} {
			c, err := parse(b)
			if err == nil && (c.BlockSize == 0 || c.BlockSize > 1<<20) {
				t.Fatalf("accepted block size %d", c.BlockSize)
			}
		}
	})
}

func FuzzParseCSW(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, tag uint32) {
		_, status, err := parseCSW(b, tag)
		if err != nil {
			if !errors.Is(err, ErrInvalidCSW) {
				t.Fatalf("error %v does not match ErrInvalidCSW", err)
			}
			return
		}
		if len(b) != 13 || status > 2 {
			t.Fatalf("accepted %x (status %d)", b, status)
		}
	})
}
