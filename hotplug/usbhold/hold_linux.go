package usbhold

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func supported() error { return nil }

// isGone: the device (or its sysfs directory) went away under us, which
// an unplug makes normal.
func isGone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
