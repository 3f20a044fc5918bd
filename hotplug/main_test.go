package hotplug_test

import (
	"testing"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// TestMain fails the test binary if reference-counted objects (nubs,
// driver instances) or goroutines (a source's reader, the bridge's
// publisher, a waiting simulator) are left behind.
func TestMain(m *testing.M) {
	leaktest.Main(m)
}
