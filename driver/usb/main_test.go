package usb

import (
	"testing"

	"go.uber.org/goleak"
)

// The gousb event goroutine must be gone once the last user closes.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
