package userclient

import (
	"testing"
	"time"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// Generous: these waits assert that something happens, not how fast.
const cancelWait = 20 * time.Second

// TestMain fails the binary if a test left a goroutine behind.
func TestMain(m *testing.M) { leaktest.Main(m) }
