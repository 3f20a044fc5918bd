package verify_test

import (
	"testing"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// Nothing a verification makes may outlive the tests, the leaks the
// fragile drivers take on purpose included (they give them back).
func TestMain(m *testing.M) { leaktest.Main(m) }
