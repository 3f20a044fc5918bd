package hotplug_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left behind (a
// source whose Close did not end its reader, a waiting simulator).
// hotplug creates no refcounted objects, so goroutines are what can leak.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
