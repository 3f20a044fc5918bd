//go:build !e2e

package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

// The harness's unit tests must leave no goroutine behind (the e2e build
// has its own TestMain, which boots machines).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
