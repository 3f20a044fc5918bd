//go:build linux && (amd64 || arm64)

package devgrant

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The usbfs request numbers, as <linux/usbdevice_fs.h> gives them on
// 64-bit x86 and ARM.
func TestUsbfsRequestNumbers(t *testing.T) {
	for name, c := range map[string]struct{ got, want uintptr }{
		"USBDEVFS_CONTROL":          {usbdevfsControl, 0xc0185500},
		"USBDEVFS_BULK":             {usbdevfsBulk, 0xc0185502},
		"USBDEVFS_GETDRIVER":        {usbdevfsGetDriver, 0x41045508},
		"USBDEVFS_CLAIMINTERFACE":   {usbdevfsClaimInterface, 0x8004550f},
		"USBDEVFS_RELEASEINTERFACE": {usbdevfsReleaseIface, 0x80045510},
		"USBDEVFS_IOCTL":            {usbdevfsIoctl, 0xc0105512},
		"USBDEVFS_CLEAR_HALT":       {usbdevfsClearHalt, 0x80045515},
		"USBDEVFS_DISCONNECT":       {usbdevfsDisconnect, 0x5516},
		"USBDEVFS_CONNECT":          {usbdevfsConnect, 0x5517},
		"USBDEVFS_DROP_PRIVILEGES":  {usbdevfsDropPrivileges, 0x4004551e},
	} {
		require.Equal(t, c.want, c.got, name)
	}
}
