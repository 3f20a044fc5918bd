//go:build !linux

package usbhold

import (
	"errors"
	"os"
)

func supported() error { return ErrNotSupported }

func isGone(err error) bool { return errors.Is(err, os.ErrNotExist) }
