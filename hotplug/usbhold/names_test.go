package usbhold

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bus    int
		device string
		ok     bool
	}{
		{"2-1:1.0", 2, "2-1", true},
		{"1-0:1.0", 1, "1-0", true},
		{"3-1.4.2:2.13", 3, "3-1.4.2", true},
		{"12-1:1.0", 12, "12-1", true},
		{"0-1:1.0", 0, "", false},
		{"2-1", 0, "", false},
		{"2-1:1", 0, "", false},
		{"2-01:1.0", 0, "", false},
		{"../2-1:1.0", 0, "", false},
		{"2-1:1.0/..", 0, "", false},
		{"2-1:1.0\n", 0, "", false},
		{"usb2", 0, "", false},
		{"", 0, "", false},
	} {
		bus, dev, ok := interfaceBus(tc.name)
		require.Equal(t, tc.ok, ok, tc.name)
		if ok {
			require.Equal(t, tc.bus, bus, tc.name)
			require.Equal(t, tc.device, dev, tc.name)
		}
	}
	for name, want := range map[string]int{"2-1:1.0": 0, "3-1.4.2:2.13": 13, "2-1:1.": -1, "2-1:1.01": -1, "2-1": -1, "2-1:1.1000": -1} {
		n, ok := interfaceNumber(name)
		require.Equal(t, want >= 0, ok, name)
		if ok {
			require.Equal(t, want, n, name)
		}
	}
	for name, want := range map[string]int{"usb1": 1, "usb12": 12, "usb": -1, "usb01": -1, "usb1/": -1, "usbx": -1, "xusb1": -1} {
		n, ok := rootHubBus(name)
		require.Equal(t, want >= 0, ok, name)
		if ok {
			require.Equal(t, want, n)
		}
	}
}

// FuzzNames: whatever a uevent or a state file says, a name that passes
// is a single path element of the kernel's form.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"2-1:1.0", "usb2", "3-1.4.2:2.13", "../x", "2-1:1.0/../../drivers"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, dev, ok := interfaceBus(s); ok {
			if strings.ContainsAny(s, "/\x00\n ") || strings.Contains(s, "..") || !strings.HasPrefix(s, dev+":") {
				t.Fatalf("accepted %q", s)
			}
		}
		if n, ok := rootHubBus(s); ok && rootHub(n) != s {
			t.Fatalf("accepted %q as root hub %d", s, n)
		}
	})
}
