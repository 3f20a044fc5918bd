//go:build linux && cgo

package usb

import "testing"

func TestInterfaceName(t *testing.T) {
	for _, c := range []struct {
		info DeviceInfo
		want string
	}{
		{DeviceInfo{Bus: 2, Port: []int{1}, Config: 1}, "2-1:1.0"},
		{DeviceInfo{Bus: 1, Port: []int{1, 4}, Config: 2}, "1-1.4:2.0"},
	} {
		if got := interfaceName(c.info, 0); got != c.want {
			t.Errorf("interfaceName(%+v) = %q, want %q", c.info, got, c.want)
		}
	}
}
