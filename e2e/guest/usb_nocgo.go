//go:build linux && !cgo

package main

import (
	"errors"

	"github.com/drvkit/drvkit/e2e/agentproto"
)

// listUSB needs libusb through gousb, which needs cgo: this agent was built
// without it.
func listUSB() ([]agentproto.USBDevice, error) {
	return nil, errors.New("listing USB devices needs libusb: this guest agent was built with CGO_ENABLED=0")
}
