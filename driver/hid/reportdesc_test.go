package hid_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/hid"
)

func TestParseReportDescriptor(t *testing.T) {
	kbd, err := hid.ParseReportDescriptor(hid.BootKeyboard)
	require.NoError(t, err)
	require.Equal(t, &hid.ReportDescriptor{UsagePage: 1, Usage: 6, Collections: 1, Reports: []hid.Report{
		{Kind: hid.Input, Bits: 64}, {Kind: hid.Output, Bits: 8},
	}}, kbd)
	require.Equal(t, 8, kbd.Size(hid.Input, 0))
	require.Equal(t, 1, kbd.Size(hid.Output, 0))
	require.Equal(t, 0, kbd.Size(hid.Feature, 0))

	mouse, err := hid.ParseReportDescriptor(hid.BootMouse)
	require.NoError(t, err)
	require.Equal(t, uint16(2), mouse.Usage)
	require.Equal(t, 3, mouse.MaxSize(hid.Input))

	// Numbered reports, a 4-byte usage carrying its page, Push/Pop, a long item.
	numbered := []byte{
		0x0b, 0x01, 0x00, 0x0c, 0x00, // Usage (Consumer 0x000c:0x0001), 4-byte form
		0xa1, 0x01, // Collection (Application)
		0x85, 0x02, 0x75, 0x08, 0x95, 0x03, 0x81, 0x02, // ID 2: 3 bytes in
		0xa4, 0x85, 0x05, 0x95, 0x01, 0xb1, 0x02, 0xb4, // Push, ID 5: 1 byte feature, Pop
		0x95, 0x01, 0x81, 0x02, // ID 2 again (popped): one more byte in
		0xfe, 0x02, 0x10, 0xaa, 0xbb, // long item, skipped
		0xc0,
	}
	d, err := hid.ParseReportDescriptor(numbered)
	require.NoError(t, err)
	require.Equal(t, uint16(0x0c), d.UsagePage)
	require.Equal(t, uint16(1), d.Usage)
	require.True(t, d.Numbered)
	require.Equal(t, 5, d.Size(hid.Input, 2), "ID byte and 4 bytes")
	require.Equal(t, 2, d.Size(hid.Feature, 5))

	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "size 0"},
		{"truncated item", []byte{0x05}, "truncated item"},
		{"truncated long item", []byte{0xfe, 0x05, 0x00, 0x01}, "truncated long item"},
		{"unbalanced end", []byte{0xc0}, "End Collection without Collection"},
		{"unclosed", []byte{0xa1, 0x01}, "1 collection(s) not ended"},
		{"pop", []byte{0xb4}, "Pop without Push"},
		{"id 0", []byte{0x85, 0x00}, "Report ID 0"},
		{"huge report", []byte{0x75, 0xff, 0x96, 0xff, 0xff, 0x81, 0x02}, "longer than"},
		{"reserved", []byte{0x0c}, "reserved item type"},
		{"unknown main", []byte{0x00}, "unknown main item"},
	} {
		_, err := hid.ParseReportDescriptor(tc.in)
		require.ErrorIs(t, err, hid.ErrBadDescriptor, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
	}
}

// FuzzParseReportDescriptor: any byte string either parses into sizes a
// driver can allocate, or is refused with ErrBadDescriptor; never a panic.
// Seeds are in testdata/fuzz.
func FuzzParseReportDescriptor(f *testing.F) {
	f.Add(hid.BootKeyboard)
	f.Add(hid.BootMouse)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := hid.ParseReportDescriptor(b)
		if err != nil {
			if !errors.Is(err, hid.ErrBadDescriptor) {
				t.Fatalf("error %v does not match ErrBadDescriptor", err)
			}
			return
		}
		for _, k := range []hid.ReportKind{hid.Input, hid.Output, hid.Feature} {
			if n := d.MaxSize(k); n < 0 || n > hid.MaxReportSize+1 {
				t.Fatalf("%s report of %d bytes", k, n)
			}
		}
	})
}
