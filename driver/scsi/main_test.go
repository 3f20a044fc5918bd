package scsi_test

import (
	"testing"

	"go.uber.org/goleak"
)

// No transport may leave goroutines behind (in-flight transfers, recovery).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
